"""Every recipe on a small deterministic fixture, negative evidence, the content model, and the
search / refit choice.

The fixture is implicit's checkerboard idea: users and items in two disjoint blocks, so for a
user of block A the best unseen item must be of block A.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recsys_shared.artifacts import MODEL_FILE, ItemItemArrays, load_npz
from recsys_shared.schemas import (
    AlsRecipe,
    BprRecipe,
    EaseRecipe,
    HybridRecipe,
    ItemKnnRecipe,
    Recipe,
)
from retraining_worker.config import Settings
from retraining_worker.data import Interactions, per_user_split
from retraining_worker.judging import Bench
from retraining_worker.recipes import DEFAULTS, TrainingSet, fit
from retraining_worker.recipes.content import Catalogue, content_features, content_neighbours
from retraining_worker.recipes.weighting import decayed_weights
from retraining_worker.selection import Plan, choose

RECIPES: list[Recipe] = [
    # Two factors and some regularisation: the blocks, not each user's own gap, are learnt.
    AlsRecipe(factors=2, iterations=10, regularization=1.0),
    AlsRecipe(factors=2, iterations=10, regularization=1.0, confidence="bm25"),
    BprRecipe(factors=4, iterations=200, learning_rate=0.05),
    ItemKnnRecipe(neighbours=10),
    ItemKnnRecipe(similarity="bm25", neighbours=10),
    EaseRecipe(l2=1.0),
    HybridRecipe(l2=1.0, content_weight=0.01),
]


def _blocks(n_users: int = 20, n_items: int = 10) -> csr_matrix:
    """Users of the first half like every item of the first half but one (their own row's
    item), and so on for the second half."""
    rows, cols = [], []
    half_users, half_items = n_users // 2, n_items // 2
    for user in range(n_users):
        block = user // half_users
        for item in range(block * half_items, (block + 1) * half_items):
            if item != block * half_items + user % half_items:
                rows.append(user)
                cols.append(item)
    return csr_matrix(
        (np.full(len(rows), 2.0, dtype=np.float32), (rows, cols)), shape=(n_users, n_items)
    )


def _training(matrix: csr_matrix, content: csr_matrix | None = None) -> TrainingSet:
    return TrainingSet(matrix, content, threads=1, seed=42)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.algorithm)
def test_each_recipe_recommends_the_missing_item_of_the_users_block(recipe: Recipe) -> None:
    matrix = _blocks()
    model = fit(recipe, _training(matrix))

    scores = model.score(matrix)
    scores[matrix.nonzero()] = -np.inf

    best = scores.argmax(axis=1)
    for user, item in enumerate(best):
        block = user // 10
        assert item == block * 5 + user % 5, (recipe.algorithm, user, item)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.algorithm)
def test_each_recipe_writes_npz_read_without_pickles(recipe: Recipe) -> None:
    files = fit(recipe, _training(_blocks())).files()

    assert MODEL_FILE in files
    for data in files.values():
        assert load_npz(data)  # allow_pickle=False: raises on any pickled object
    if recipe.algorithm in ("item_knn", "ease", "hybrid"):
        arrays = ItemItemArrays.from_npz(files[MODEL_FILE])
        assert arrays.sparse.shape == (10, 10)


@pytest.mark.parametrize(
    "recipe",
    [AlsRecipe(factors=4, iterations=10), EaseRecipe(l2=1.0), ItemKnnRecipe(neighbours=10)],
    ids=lambda recipe: recipe.algorithm,
)
def test_a_low_rating_lowers_the_items_like_it(recipe: Recipe) -> None:
    matrix = _blocks().tolil()
    model = fit(recipe, _training(matrix.tocsr()))
    # User 0 (block A) now rates item 1, of block A, low: items liked along with it lose score.
    history = matrix[0].tocsr()
    history[0, 1] = 0.0
    history.eliminate_zeros()
    disliked = history.copy().tolil()
    disliked[0, 1] = -2.0
    neutral_scores = model.score(history.tocsr())[0]
    negative_scores = model.score(disliked.tocsr())[0]

    assert negative_scores[0] < neutral_scores[0]  # item 0, liked with item 1 by block A


def test_negative_weight_zero_ignores_a_low_rating() -> None:
    matrix = _blocks()
    model = fit(EaseRecipe(l2=1.0, negative_weight=0.0), _training(matrix))
    history = matrix[0].tolil()
    history[0, 1] = 0.0
    with_low = history.copy()
    with_low[0, 1] = -2.0

    np.testing.assert_allclose(
        model.score(history.tocsr()), model.score(with_low.tocsr()), rtol=1e-6
    )


def test_decay_halves_weights_a_half_life_before_the_users_latest(
    make_interactions: type[Interactions],
) -> None:
    day = 86_400.0
    data = make_interactions(
        rows=[0, 0, 1], cols=[0, 1, 0], weights=[2.0, 2.0, 2.0], times=[0.0, 10 * day, 3 * day]
    )

    weights = decayed_weights(data, 10.0)

    np.testing.assert_allclose(weights, [1.0, 2.0, 2.0])  # user 1's only event is its latest
    assert decayed_weights(data, None) is data.weights


def test_content_neighbours_follow_categories_and_title_words() -> None:
    items = np.array(["a", "b", "c", "d"], dtype=np.str_)
    catalogue = Catalogue(
        items,
        np.array(["Space Wars", "Space Wars II", "Cooking Show", "Baking Show"], dtype=np.str_),
        [["Science Fiction"], ["Science Fiction"], ["Home & Garden"], ["Home & Garden"]],
    )

    neighbours = content_neighbours(content_features(items, catalogue), 1)

    assert neighbours[0].indices.tolist() == [1]
    assert neighbours[2].indices.tolist() == [3]
    assert neighbours[0, 0] == 0  # never its own neighbour


def test_the_hybrid_scores_an_item_nobody_touched_by_content() -> None:
    matrix = csr_matrix(np.hstack([_blocks().toarray(), np.zeros((20, 1))]), dtype=np.float32)
    items = np.array([f"i{index}" for index in range(11)], dtype=np.str_)
    categories = [["alpha"]] * 5 + [["beta"]] * 5 + [["alpha"]]
    catalogue = Catalogue(items, np.array([f"t{i}" for i in range(11)]), categories)
    content = content_neighbours(content_features(items, catalogue), 5)

    model = fit(HybridRecipe(l2=1.0, content_weight=0.5), _training(matrix, content))
    scores = model.score(matrix)

    assert (scores[:10, 10] > 0).all()  # block A users: the new alpha item
    assert (scores[10:, 10] == 0).all()
    assert fit(EaseRecipe(l2=1.0), _training(matrix)).score(matrix)[:, 10].max() == 0


# ── search or refit ──────────────────────────────────────────────────────────────────────
def _bench(clusters: Interactions, settings: Settings) -> Bench:
    return Bench.build(clusters, settings.holdout_fraction, settings, content=None, features=None)


def test_no_winner_yet_means_a_search(clusters: Interactions, settings: Settings) -> None:
    searching = settings.model_copy(
        update={"search_algorithms": ["als", "ease"], "search_max_trials": 4}
    )

    recipe, selection = choose(Plan(), None, _bench(clusters, searching), searching)

    assert selection.mode == "search"
    assert len(selection.candidates) == 4
    assert {candidate.recipe.algorithm for candidate in selection.candidates} == {"als", "ease"}
    assert recipe == selection.candidates[0].recipe
    best = selection.candidates[0].metrics["precision_at_5"]
    assert all(other.metrics["precision_at_5"] <= best for other in selection.candidates)
    assert "highest validation precision_at_5" in selection.reason


def test_a_winner_is_refitted_unless_a_search_is_asked(
    clusters: Interactions, settings: Settings
) -> None:
    winner = EaseRecipe(l2=50.0)
    bench = _bench(clusters, settings)
    searching = settings.model_copy(update={"search_algorithms": ["ease"], "search_max_trials": 2})

    refit, refit_selection = choose(Plan(), winner, bench, settings)
    _, search_selection = choose(Plan(search=True), winner, bench, searching)
    asked, asked_selection = choose(Plan(algorithm="item_knn"), winner, bench, settings)

    assert (refit, refit_selection.mode, refit_selection.candidates) == (winner, "refit", [])
    assert search_selection.mode == "search"
    assert (asked, asked_selection.mode) == (DEFAULTS["item_knn"], "requested")


def test_validation_holds_out_each_users_latest_liked_items(
    make_interactions: type[Interactions],
) -> None:
    data = make_interactions(
        rows=[0] * 5 + [1] * 5,
        cols=[0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
        weights=[1, 1, 1, 1, 1, 1, 1, 1, 1, -1],
        times=[1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
    )

    split = per_user_split(data, 0.2)

    assert split.users.tolist() == [0]  # user 1's latest is a low rating: nothing to predict
    assert split.targets == [{4}]
    assert not split.train[4]
    assert not split.train[9]
