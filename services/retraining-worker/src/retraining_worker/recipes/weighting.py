"""Interactions as a recipe weighs them: by age (a half-life) and by sign (negative evidence)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recsys_shared.schemas import Recipe
from retraining_worker.data import Interactions


def decayed_weights(
    data: Interactions, half_life_days: float | None, mask: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float32]:
    """Each interaction's weight halved for every ``half_life_days`` between it and the same
    user's latest interaction (under ``mask``).

    Relative to the user, not to the clock: a user who stopped a year ago keeps their taste
    whole, while within one history the old interests fade behind the new.
    """
    if half_life_days is None or not len(data):
        return data.weights
    times = np.where(mask, data.times, -np.inf) if mask is not None else data.times
    latest = np.full(data.shape[0], -np.inf)
    np.maximum.at(latest, data.rows, times)
    age_days = np.maximum(latest[data.rows] - data.times, 0.0) / 86_400
    return (data.weights * np.power(0.5, age_days / half_life_days)).astype(np.float32)


def training_matrix(
    data: Interactions, recipe: Recipe, mask: npt.NDArray[np.bool_] | None = None
) -> csr_matrix:
    """The signed user × item matrix a recipe is fitted on."""
    weights = decayed_weights(data, recipe.half_life_days, mask)
    return data.matrix(mask, signed=True, weights=weights)
