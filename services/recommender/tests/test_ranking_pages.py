"""Pages of one list asked apart (offset 0, k, 2k, …) tile it, no item twice and none skipped,
with exploration slots and with MMR re-ranking (``recommender.ranking.ranked_page``)."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recommender.model_store import DictIndex, Floats, IdIndex, Indexes, LoadedModel
from recommender.ranking import RankingOptions, Scores, ranked_page, similar_scores
from recsys_shared.schemas import ModelInfo, Strategy

N_ITEMS = 60
#: The item a similar-items list is for: excluded from its own list.
ITEM = 0


def _model(n_cold: int, seed: int = 0) -> LoadedModel:
    """Random factors; the last ``n_cold`` items untrained (zero factors, as no training user
    touched them); every item a content neighbour of every other (positive weights)."""
    generator = np.random.default_rng(seed)
    factors = generator.normal(size=(N_ITEMS, 8)).astype(np.float32)
    cold = np.zeros(N_ITEMS, dtype=bool)
    cold[N_ITEMS - n_cold :] = True
    factors[cold] = 0.0
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    content = np.abs(generator.normal(size=(N_ITEMS, N_ITEMS))).astype(np.float32) + 0.01
    return LoadedModel(
        info=cast(ModelInfo, None),
        users=IdIndex(np.array(["u"])),
        items=DictIndex(np.array([f"i{row}" for row in range(N_ITEMS)])),
        user_factors=np.zeros((1, 8), dtype=np.float32),
        item_factors=factors,
        unit_item_factors=factors / norms,
        model=None,
        content=csr_matrix(content),
        cold=cold,
    )


def _page(
    model: LoadedModel,
    scores: Scores,
    k: int,
    offset: int,
    options: RankingOptions,
    share: float,
    candidates: Indexes | None = None,
) -> tuple[list[int], frozenset[int]]:
    rows, _, explored = ranked_page(
        model,
        scores,
        k=k,
        offset=offset,
        exclude=np.array([ITEM], dtype=np.int64),
        candidates=candidates,
        options=options,
        share=share,
    )
    return rows.tolist(), explored


def _by_score(values: Floats, rows: list[int]) -> list[int]:
    """``rows`` best first, ties by row (as ``top_k`` orders them)."""
    return sorted(rows, key=lambda row: (-float(values[row]), row))


@pytest.mark.parametrize("n_cold", [12, 3], ids=["cold items for every page", "too few"])
@pytest.mark.parametrize(("k", "share"), [(10, 0.2), (7, 0.3)])
def test_exploration_pages_tile_one_list(n_cold: int, k: int, share: float) -> None:
    model = _model(n_cold)
    scores = similar_scores(model, ITEM)
    assert scores is not None
    assert scores.strategy is Strategy.SIMILAR
    options = RankingOptions(similar_exploration_share=share)
    slots, pages = int(k * share), 4

    asked = [_page(model, scores, k, page * k, options, share) for page in range(pages)]

    listed = [row for rows, _ in asked for row in rows]
    explored = [row for rows, slot_rows in asked for row in rows if row in slot_rows]
    assert len(listed) == pages * k
    assert len(set(listed)) == len(listed)
    # Each page gives its last places to cold items, as long as there are some.
    for page, (rows, slot_rows) in enumerate(asked):
        share_left = min(slots, max(0, n_cold - page * slots))
        assert set(rows[k - share_left :]) == slot_rows
    # Nothing skipped: cold items by their likeness to the item, warm ones by score.
    warm = [row for row in range(N_ITEMS) if row != ITEM and not model.cold[row]]  # type: ignore[index]
    cold = [row for row in range(N_ITEMS) if model.cold[row]]  # type: ignore[index]
    likeness = model.content[ITEM].toarray()[0]  # type: ignore[index]
    assert explored == _by_score(likeness, cold)[: len(explored)]
    ranked = [row for row in listed if row not in explored]
    assert ranked == _by_score(scores.values, warm)[: len(ranked)]
    # A page starting anywhere is the same list's slice.
    assert _page(model, scores, k, 3, options, share)[0] == listed[3 : 3 + k]


def test_a_category_short_of_ranked_items_ends_with_its_cold_ones() -> None:
    model = _model(12)
    scores = similar_scores(model, ITEM)
    assert scores is not None
    options = RankingOptions(similar_exploration_share=0.2)
    # 10 warm items and 8 of the 12 cold: after 8 + 2 ranked, the cold ones fill the rest.
    candidates = np.concatenate((np.arange(1, 11), np.arange(N_ITEMS - 12, N_ITEMS - 4)))

    asked = [_page(model, scores, 10, offset, options, 0.2, candidates) for offset in (0, 10, 20)]

    listed = [row for rows, _ in asked for row in rows]
    assert [len(rows) for rows, _ in asked] == [10, 8, 0]
    assert sorted(listed) == candidates.tolist()
    assert asked[1][1] == frozenset(asked[1][0][2:])  # every cold item listed is marked


def _mmr_reference(model: LoadedModel, values: Floats, wanted: int, weight: float) -> list[int]:
    """MMR's greedy sequence spelled out: pick t among the top max(3(t+1), 30) by score, by
    weight x relevance (0..1 over those) - (1 - weight) x the closest cosine to a pick."""
    order = _by_score(values, [row for row in range(N_ITEMS) if row != ITEM])
    unit = model.unit_item_factors
    picked: list[int] = []
    for pick in range(wanted):
        window = order[: max(3 * (pick + 1), 30)]
        high, low = float(values[window[0]]), float(values[window[-1]])

        def marginal(row: int, high: float = high, low: float = low) -> float:
            relevance = (float(values[row]) - low) / ((high - low) or 1.0)
            closest = max([float(unit[row] @ unit[other]) for other in picked] + [0.0])
            return weight * relevance - (1.0 - weight) * closest

        picked.append(max((row for row in window if row not in picked), key=marginal))
    return picked


@pytest.mark.parametrize("weight", [0.5, 0.2])
def test_mmr_pages_are_one_greedy_sequence(weight: float) -> None:
    model = _model(0, seed=1)
    user = np.random.default_rng(2).normal(size=8).astype(np.float32)
    scores = Scores(model.item_factors @ user, Strategy.PERSONALIZED)
    options = RankingOptions(mmr_lambda=weight)

    pages = [_page(model, scores, 10, offset, options, 0.0)[0] for offset in (0, 10, 20, 30)]

    listed = [row for rows in pages for row in rows]
    assert len(set(listed)) == len(listed) == 40
    assert listed == _mmr_reference(model, scores.values, 40, weight)
    assert _page(model, scores, 10, 5, options, 0.0)[0] == listed[5:15]


def test_mmr_and_exploration_pages_tile_one_list() -> None:
    model = _model(12)
    scores = similar_scores(model, ITEM)
    assert scores is not None
    options = RankingOptions(similar_exploration_share=0.2, mmr_lambda=0.5)

    asked = [_page(model, scores, 10, offset, options, 0.2) for offset in (0, 10, 20)]

    listed = [row for rows, _ in asked for row in rows]
    assert len(set(listed)) == len(listed) == 30
    assert all(len(slot_rows) == 2 for _, slot_rows in asked)
    assert _page(model, scores, 10, 7, options, 0.2)[0] == listed[7:17]
