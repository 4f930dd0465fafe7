"""top_k: the ranking every endpoint uses, on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.scoring import top_k


def _scores(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _random_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n).astype(np.float32) / n


def test_returns_the_best_rows_best_first() -> None:
    rows, scores = top_k(_scores([0.1, 0.9, 0.5, 0.7, 0.3]), k=3)
    assert rows.tolist() == [1, 3, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert rows.dtype == np.int64
    assert scores.dtype == np.float32


def test_matches_a_full_sort() -> None:
    scores = _random_scores(500)
    rows, ranked = top_k(scores.copy(), k=25)
    assert rows.tolist() == np.argsort(-scores)[:25].tolist()
    assert np.all(np.diff(ranked) < 0)


def test_page_two_continues_page_one_without_overlap() -> None:
    scores = _random_scores(200, seed=1)
    first, _ = top_k(scores.copy(), k=10)
    second, _ = top_k(scores.copy(), k=10, offset=10)
    both, _ = top_k(scores.copy(), k=20)
    assert not set(first.tolist()) & set(second.tolist())
    assert [*first.tolist(), *second.tolist()] == both.tolist()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [7, 13, 25])
def test_paging_through_tied_scores_visits_every_row_once(seed: int, k: int) -> None:
    # Scores with few distinct values (items with identical or zero factors tie exactly):
    # every page must agree on the order, or a row is served twice and another never.
    scores = np.random.default_rng(seed).integers(0, 4, size=60).astype(np.float32)
    served = [
        row
        for offset in range(0, 60, k)
        for row in top_k(scores.copy(), k=k, offset=offset)[0].tolist()
    ]
    assert sorted(served) == list(range(60))
    assert served == top_k(scores.copy(), k=60)[0].tolist()


def test_excluded_rows_are_never_returned() -> None:
    scores = _random_scores(100, seed=2)
    best = np.argsort(-scores)[:5].astype(np.int64)
    rows, returned = top_k(scores.copy(), k=100, exclude=best)
    assert not set(rows.tolist()) & set(best.tolist())
    assert len(rows) == 95
    assert np.isfinite(returned).all()


def test_excluded_rows_shift_the_ranking_up() -> None:
    rows, _ = top_k(_scores([0.9, 0.8, 0.7, 0.6]), k=2, exclude=np.array([0], dtype=np.int64))
    assert rows.tolist() == [1, 2]


def test_candidates_restrict_the_ranking_to_them() -> None:
    scores = _scores([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    candidates = np.array([1, 3, 5], dtype=np.int64)
    rows, ranked = top_k(scores.copy(), k=2, candidates=candidates)
    assert rows.tolist() == [5, 3]
    assert ranked.tolist() == pytest.approx([0.3, 0.2])


def test_candidates_and_exclusions_combine() -> None:
    scores = _scores([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    rows, _ = top_k(
        scores.copy(),
        k=10,
        candidates=np.array([1, 3, 5], dtype=np.int64),
        exclude=np.array([5, 0], dtype=np.int64),
    )
    assert rows.tolist() == [3, 1]


def test_asking_for_more_than_exist_returns_only_finite_scored_rows() -> None:
    scores = _scores([0.4, -np.inf, 0.2, 0.3, -np.inf])
    rows, ranked = top_k(scores, k=10, exclude=np.array([3], dtype=np.int64))
    assert rows.tolist() == [0, 2]
    assert np.isfinite(ranked).all()


@pytest.mark.parametrize(("k", "offset"), [(5, 3), (10, 10), (3, 50)])
def test_k_plus_offset_beyond_the_length_is_fine(k: int, offset: int) -> None:
    scores = _scores([0.5, 0.4, 0.3, 0.2, 0.1])
    rows, ranked = top_k(scores, k=k, offset=offset)
    assert rows.tolist() == [0, 1, 2, 3, 4][offset : offset + k]
    assert len(ranked) == len(rows)


def test_nothing_to_rank() -> None:
    rows, scores = top_k(np.empty(0, dtype=np.float32), k=5)
    assert len(rows) == len(scores) == 0
    rows, _ = top_k(_scores([0.1, 0.2]), k=5, candidates=np.empty(0, dtype=np.int64))
    assert len(rows) == 0
