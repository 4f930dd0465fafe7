"""Folding a user's interactions into a vector against fixed item factors, in plain numpy.

ALS models use implicit's exact ``recalculate_user``; this is for models without one (BPR):
the ridge regression of the user's weights on the item factors of the items they touched.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
