"""Folding a user's interactions into a model, in plain numpy, the same in training and serving.

ALS models use implicit's exact ``recalculate_user``; :func:`least_squares_fold_in` is for models
without one (BPR): the ridge regression of the user's weights on the item factors of the items
they touched. :class:`ConfidenceWeighting` and :func:`signed_history` turn stored weights into
what a recipe was trained on, so a fresh event counts as a trained one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

Floats = npt.NDArray[np.float32]


def least_squares_fold_in(
    item_factors: Floats,
    item_rows: npt.NDArray[np.int64],
    weights: Floats,
    regularization: float = 0.1,
) -> Floats:
    factors = item_factors[item_rows]
    gram = factors.T @ (factors * weights[:, None])
    gram += regularization * np.eye(factors.shape[1], dtype=np.float32)
    target = factors.T @ weights
    return np.linalg.solve(gram, target).astype(np.float32)


@dataclass(frozen=True)
class ConfidenceWeighting:
    """BM25 or TF-IDF weighting of a signed user × item matrix, fitted on the training data
    and applied the same way to a user's fresh events when they are folded in.

    The magnitude of each weight is transformed; its sign (negative evidence) is kept.
    """

    scheme: str  # "bm25" or "tfidf"
    item_idf: Floats
    average_length: float
    k1: float = 100.0
    b: float = 0.8

    @classmethod
    def fit(cls, matrix: csr_matrix, scheme: str, *, k1: float, b: float) -> ConfidenceWeighting:
        n_users = max(matrix.shape[0], 1)
        frequency = np.bincount(matrix.indices, minlength=matrix.shape[1])
        # Floored: an item everyone touched would get a weight of 0 or less.
        idf = np.maximum(np.log(n_users) - np.log1p(frequency), 0.01).astype(np.float32)
        lengths = np.abs(matrix).sum(axis=1)
        average = float(lengths.mean()) if matrix.shape[0] else 1.0
        return cls(scheme, idf, max(average, 1e-6), k1, b)

    def apply(self, matrix: csr_matrix) -> csr_matrix:
        weighted = matrix.tocsr(copy=True).astype(np.float32)
        magnitude = np.abs(weighted.data)
        rows = np.repeat(np.arange(weighted.shape[0]), np.diff(weighted.indptr))
        idf = self.item_idf[weighted.indices]
        if self.scheme == "bm25":
            lengths = np.asarray(np.abs(weighted).sum(axis=1)).ravel()
            norm = (1.0 - self.b) + self.b * lengths / self.average_length
            magnitude = magnitude * (self.k1 + 1.0) / (self.k1 * norm[rows] + magnitude) * idf
        else:
            magnitude = np.sqrt(magnitude) * idf
        weighted.data = (np.sign(weighted.data) * magnitude).astype(np.float32)
        return weighted

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "scheme": np.asarray(self.scheme),
            "item_idf": self.item_idf,
            "average_length": np.asarray(self.average_length),
            "k1": np.asarray(self.k1),
            "b": np.asarray(self.b),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[np.generic]]) -> ConfidenceWeighting:
        return cls(
            scheme=str(arrays["scheme"]),
            item_idf=np.asarray(arrays["item_idf"], dtype=np.float32),
            average_length=float(arrays["average_length"]),
            k1=float(arrays["k1"]),
            b=float(arrays["b"]),
        )


def signed_history(weights: Floats, negative_weight: float) -> Floats:
    """Stored weights as a recipe counts them: negative evidence scaled by its share."""
    return np.where(weights < 0, weights * negative_weight, weights).astype(np.float32)


def als_negatives(matrix: csr_matrix, alpha: float) -> csr_matrix:
    """Negative weights as implicit's ALS reads negative evidence, before its ``alpha`` scaling.

    implicit takes a negative entry as preference 0 with confidence ``alpha·|c|``, and an
    unobserved item already has confidence 1: a negative entry must exceed that to say more
    than "not seen". So ``−w`` becomes ``−(1/alpha + w)``: confidence ``1 + alpha·w``.
    """
    negative = matrix.data < 0
    if negative.any():
        matrix = matrix.copy()
        matrix.data[negative] = matrix.data[negative] - np.float32(1.0 / alpha)
    return matrix
