"""Ranking: one matrix-vector product and a partial sort, with excluded items masked out.

Pure functions over numpy arrays, so the hot path is easy to test and to benchmark against a bare
``argpartition``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]
Indexes = npt.NDArray[np.int64]


def top_k(
    scores: Floats,
    *,
    k: int,
    offset: int = 0,
    exclude: Indexes | None = None,
    candidates: Indexes | None = None,
) -> tuple[Indexes, Floats]:
    """Rows ranked ``offset .. offset+k`` by score, best first, skipping ``exclude``.

    ``candidates`` restricts the ranking to those rows (a category); ``scores`` is modified in
    place, so pass a fresh array.
    """
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    rows: Indexes
    if candidates is not None:
        rows = candidates
        scores = scores[candidates]
    else:
        rows = np.arange(len(scores), dtype=np.int64)
    wanted = min(offset + k, len(scores))
    if wanted <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if wanted < len(scores):
        best = np.argpartition(-scores, wanted - 1)[:wanted]
        # argpartition picks arbitrary rows among those tied at the cut: take the lowest ones,
        # so every page agrees on one order and paging never repeats or skips a row.
        cut = scores[best].min()
        if np.isfinite(cut):
            above = np.flatnonzero(scores > cut)
            best = np.concatenate((above, np.flatnonzero(scores == cut)[: wanted - len(above)]))
    else:
        best = np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    best = best[np.isfinite(scores[best])][offset:]
    return rows[best], scores[best].astype(np.float32)
