"""Offline metrics at k, for a recipe and for the popularity baseline: accuracy (precision,
recall, NDCG, MAP) and beyond it (coverage, novelty, intra-list diversity)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recsys_shared.schemas import metric_name


def ranking_metrics(
    ranked: npt.NDArray[np.int64], targets: Sequence[set[int]], *, k: int, n_items: int
) -> dict[str, float]:
    """precision, recall, NDCG and MAP at k, and catalogue coverage of the top-k lists."""
    if not targets:
        return {}
    precision = recall = ndcg = average_precision = 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, wanted in zip(ranked, targets, strict=True):
        hits = np.fromiter((item in wanted for item in row[:k]), dtype=bool, count=min(k, len(row)))
        n_hits = int(hits.sum())
        precision += n_hits / k
        recall += n_hits / len(wanted)
        ideal = discounts[: min(len(wanted), k)].sum()
        ndcg += float(discounts[: len(hits)][hits].sum() / ideal)
        if n_hits:
            cumulative = np.cumsum(hits)
            positions = np.flatnonzero(hits)
            average_precision += float((cumulative[positions] / (positions + 1)).sum()) / min(
                len(wanted), k
            )
    users = len(targets)
    listed = np.unique(ranked[:, :k])
    coverage = len(listed[listed >= 0]) / n_items if n_items else 0.0
    return {
        metric_name("precision", k): precision / users,
        metric_name("recall", k): recall / users,
        metric_name("ndcg", k): ndcg / users,
        metric_name("map", k): average_precision / users,
        "coverage": coverage,
        "evaluated_users": float(users),
    }


def top_k_excluding(
    scores: npt.NDArray[np.float32], seen: csr_matrix, k: int
) -> npt.NDArray[np.int64]:
    """Per row of ``scores``, the k best columns that are not in that row of ``seen``; a row
    with fewer than k unseen columns is padded with -1 (which no target ever equals)."""
    scores = scores.copy()
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best_scores = np.take_along_axis(scores, best, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    ranked = np.take_along_axis(best, order, axis=1).astype(np.int64)
    ranked[~np.isfinite(np.take_along_axis(best_scores, order, axis=1))] = -1
    return ranked


def rank_in_batches(
    score: Callable[[slice], npt.NDArray[np.float32]],
    seen: csr_matrix,
    *,
    k: int,
    batch_size: int = 1024,
) -> npt.NDArray[np.int64]:
    """Top-k lists for every evaluated user, scoring ``batch_size`` users at a time so that the
    dense score matrix never holds more than one batch."""
    n_users = seen.shape[0]
    lists = [
        top_k_excluding(
            score(slice(start, start + batch_size)), seen[start : start + batch_size], k
        )
        for start in range(0, n_users, batch_size)
    ]
    return np.concatenate(lists) if lists else np.empty((0, k), dtype=np.int64)


def item_popularity(train: csr_matrix) -> npt.NDArray[np.float32]:
    """The baseline's scores: how many users interacted with each item in the training window."""
    return np.asarray((train > 0).sum(axis=0), dtype=np.float32).ravel()


def lift(challenger: float, baseline: float) -> float:
    if baseline <= 0:
        return math.inf if challenger > 0 else 0.0
    return challenger / baseline - 1.0


def novelty(
    ranked: npt.NDArray[np.int64], popularity: npt.NDArray[np.float32], users: int
) -> float:
    """Mean self-information of the listed items, −log2(share of training users who touched
    the item): higher means less obvious items (an untouched item counts as touched once)."""
    listed = ranked[ranked >= 0]
    if not len(listed) or users <= 0:
        return 0.0
    share = np.maximum(popularity[listed], 1.0) / users
    return float(np.mean(-np.log2(np.minimum(share, 1.0))))


def intra_list_diversity(ranked: npt.NDArray[np.int64], item_vectors: csr_matrix) -> float:
    """Mean over lists of 1 − the mean cosine similarity of their pairs of items, with items
    described by ``item_vectors`` (rows of unit length: content, or who interacted)."""
    diversities = []
    for row in ranked:
        items = row[row >= 0]
        if len(items) < 2:
            continue
        vectors = item_vectors[items]
        similarity = (vectors @ vectors.T).toarray()
        pairs = len(items) * (len(items) - 1)
        diversities.append(1.0 - (similarity.sum() - np.trace(similarity)) / pairs)
    return float(np.mean(diversities)) if diversities else 0.0


def unit_rows(matrix: csr_matrix) -> csr_matrix:
    """Rows scaled to unit length (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    scaled: csr_matrix = csr_matrix(matrix.multiply(1.0 / norms[:, None]), dtype=np.float32)
    return scaled
