"""Recipes that compete at the gate: ALS, BPR, item-kNN, EASE and a content hybrid.

``fit`` turns a typed recipe and a training set into a :class:`FittedRecipe`; ``DEFAULTS`` holds
each algorithm's starting recipe (the search's first trial for it).
"""

from __future__ import annotations

from typing import Final

from recsys_shared.schemas import (
    Algorithm,
    AlsRecipe,
    BprRecipe,
    EaseRecipe,
    HybridRecipe,
    ItemKnnRecipe,
    Recipe,
)
from retraining_worker.recipes.base import FittedRecipe, TrainingSet
from retraining_worker.recipes.factors import AlsModel, BprModel
from retraining_worker.recipes.item_item import fit_ease, fit_hybrid, fit_item_knn

DEFAULTS: Final[dict[Algorithm, Recipe]] = {
    "als": AlsRecipe(),
    "bpr": BprRecipe(),
    "item_knn": ItemKnnRecipe(),
    "ease": EaseRecipe(),
    "hybrid": HybridRecipe(),
}


def fit(recipe: Recipe, data: TrainingSet) -> FittedRecipe:
    """Fit ``recipe`` on ``data``."""
    if isinstance(recipe, AlsRecipe):
        return AlsModel.fit(recipe, data)
    if isinstance(recipe, BprRecipe):
        return BprModel.fit(recipe, data)
    if isinstance(recipe, ItemKnnRecipe):
        return fit_item_knn(recipe, data)
    if isinstance(recipe, HybridRecipe):
        return fit_hybrid(recipe, data)
    return fit_ease(recipe, data)


def describe(recipe: Recipe) -> str:
    """``ease(l2=300, max_items=2000, …)``: a recipe in one line, for reasons and logs."""
    fields = recipe.model_dump(exclude={"algorithm"})
    return f"{recipe.algorithm}({', '.join(f'{key}={value}' for key, value in fields.items())})"


__all__ = ["DEFAULTS", "FittedRecipe", "TrainingSet", "describe", "fit"]
