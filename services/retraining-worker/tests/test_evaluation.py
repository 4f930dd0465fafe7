"""Ranking metrics on hand-computed cases, and top-k ranking that excludes seen items."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from retraining_worker.evaluation import (
    item_popularity,
    lift,
    rank_in_batches,
    ranking_metrics,
    top_k_excluding,
)


def test_perfect_ranking_scores_one() -> None:
    ranked = np.array([[0, 1, 2], [5, 4, 3]], dtype=np.int64)
    targets = [{0, 1, 2, 9}, {3, 4, 5}]

    result = ranking_metrics(ranked, targets, k=3, n_items=10)

    assert result["precision_at_3"] == 1.0
    assert result["ndcg_at_3"] == pytest.approx(1.0)
    assert result["map_at_3"] == pytest.approx(1.0)
    assert result["recall_at_3"] == pytest.approx((3 / 4 + 1.0) / 2)
    assert result["coverage"] == pytest.approx(6 / 10)
    assert result["evaluated_users"] == 2.0


def test_hand_computed_metrics() -> None:
    ranked = np.array([[3, 0, 4], [1, 2, 0]], dtype=np.int64)
    targets = [{0, 4}, {2}]

    result = ranking_metrics(ranked, targets, k=3, n_items=8)

    # User A: hits at ranks 2 and 3 of 3; two targets.
    precision_a, recall_a = 2 / 3, 1.0
    dcg_a = 1 / math.log2(3) + 1 / math.log2(4)
    ndcg_a = dcg_a / (1 / math.log2(2) + 1 / math.log2(3))
    ap_a = (1 / 2 + 2 / 3) / 2
    # User B: one hit at rank 2; one target.
    precision_b, recall_b = 1 / 3, 1.0
    ndcg_b = (1 / math.log2(3)) / 1.0
    ap_b = (1 / 2) / 1
    assert result["precision_at_3"] == pytest.approx((precision_a + precision_b) / 2)
    assert result["recall_at_3"] == pytest.approx((recall_a + recall_b) / 2)
    assert result["ndcg_at_3"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert result["ndcg_at_3"] == pytest.approx(0.66218, abs=1e-5)
    assert result["map_at_3"] == pytest.approx((ap_a + ap_b) / 2)
    assert result["map_at_3"] == pytest.approx(13 / 24)
    # Distinct items recommended {0, 1, 2, 3, 4} out of 8.
    assert result["coverage"] == pytest.approx(5 / 8)
    assert result["evaluated_users"] == 2.0


def test_metrics_only_look_at_the_first_k() -> None:
    ranked = np.array([[7, 8, 1, 2]], dtype=np.int64)

    result = ranking_metrics(ranked, [{1, 2}], k=2, n_items=10)

    assert result["precision_at_2"] == 0.0
    assert result["ndcg_at_2"] == 0.0
    assert result["map_at_2"] == 0.0
    assert result["coverage"] == pytest.approx(2 / 10)


def test_no_targets_gives_no_metrics() -> None:
    assert ranking_metrics(np.empty((0, 5), dtype=np.int64), [], k=5, n_items=10) == {}


def _scores_and_seen(n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, csr_matrix]:
    generator = np.random.default_rng(seed)
    scores = generator.random((n_users, n_items)).astype(np.float32)
    seen = csr_matrix((generator.random((n_users, n_items)) < 0.4).astype(np.float32))
    return scores, seen


def test_top_k_excluding_never_returns_a_seen_item() -> None:
    scores, seen = _scores_and_seen(12, 30, seed=3)
    k = 5

    ranked = top_k_excluding(scores, seen, k)

    assert ranked.shape == (12, k)
    dense_seen = seen.toarray() > 0
    for user, row in enumerate(ranked):
        assert not dense_seen[user, row].any()
        # The k best unseen items, best first.
        unseen = np.flatnonzero(~dense_seen[user])
        expected = unseen[np.argsort(-scores[user, unseen], kind="stable")][:k]
        assert row.tolist() == expected.tolist()
    assert seen.nnz > 0


def test_top_k_excluding_leaves_scores_untouched() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.7]], dtype=np.float32)
    original = scores.copy()

    ranked = top_k_excluding(scores, csr_matrix(np.array([[1, 0, 0, 0]])), 2)

    assert ranked.tolist() == [[3, 2]]
    np.testing.assert_array_equal(scores, original)


def test_rank_in_batches_is_independent_of_batch_size() -> None:
    scores, seen = _scores_and_seen(9, 25, seed=5)

    def score(rows: slice) -> np.ndarray:
        return scores[rows]

    one = rank_in_batches(score, seen, k=4, batch_size=1)
    few = rank_in_batches(score, seen, k=4, batch_size=4)
    all_at_once = rank_in_batches(score, seen, k=4, batch_size=1024)

    assert one.shape == (9, 4)
    np.testing.assert_array_equal(one, all_at_once)
    np.testing.assert_array_equal(few, all_at_once)
    np.testing.assert_array_equal(all_at_once, top_k_excluding(scores, seen, 4))


def test_rank_in_batches_without_users() -> None:
    ranked = rank_in_batches(
        lambda rows: np.empty((0, 6), dtype=np.float32), csr_matrix((0, 6)), k=3
    )

    assert ranked.shape == (0, 3)


def test_item_popularity_counts_users_not_weights() -> None:
    train = csr_matrix(np.array([[5.0, 0.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))

    np.testing.assert_array_equal(item_popularity(train), [3.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("challenger", "baseline", "expected"),
    [(0.2, 0.1, 1.0), (0.1, 0.2, -0.5), (0.3, 0.0, math.inf), (0.0, 0.0, 0.0)],
)
def test_lift(challenger: float, baseline: float, expected: float) -> None:
    assert lift(challenger, baseline) == pytest.approx(expected)


def test_rows_with_too_few_unseen_items_are_padded_not_filled_with_seen_ones() -> None:
    from scipy.sparse import csr_matrix

    from retraining_worker.evaluation import top_k_excluding

    ranked = top_k_excluding(
        np.array([[3.0, 2.0, 1.0]], dtype=np.float32), csr_matrix(np.array([[1, 1, 0]])), 2
    )
    assert ranked.tolist() == [[2, -1]]
