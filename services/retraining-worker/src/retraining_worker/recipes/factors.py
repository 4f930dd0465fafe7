"""Factor recipes: implicit's ALS (signed confidences, BM25/TF-IDF weighting) and BPR.

The recommender loads these with implicit's own ``load`` and folds fresh events in with the
same weighting (``recsys_shared.foldin``), so what is evaluated here is what it serves.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from scipy.sparse import csr_matrix

from recsys_shared.artifacts import CONFIDENCE_FILE, MODEL_FILE, npz_bytes
from recsys_shared.foldin import (
    ConfidenceWeighting,
    als_negatives,
    least_squares_fold_in,
    signed_history,
)
from recsys_shared.schemas import AlsRecipe, BprRecipe
from retraining_worker.recipes.base import Floats, TrainingSet


def _signed(matrix: csr_matrix, negative_weight: float) -> csr_matrix:
    weighted = matrix.copy()
    weighted.data = signed_history(weighted.data, negative_weight)
    weighted.eliminate_zeros()
    return weighted


def _shared_options(recipe: AlsRecipe | BprRecipe, data: TrainingSet) -> dict[str, Any]:
    """What implicit's ALS and BPR both take: the recipe's size, regularization and length
    of training, and this run's seed and threads (so a search's trials are reproducible)."""
    return {
        "factors": recipe.factors,
        "regularization": recipe.regularization,
        "iterations": recipe.iterations,
        "random_state": data.seed,
        "num_threads": data.threads,
    }


@dataclass
class AlsModel:
    recipe: AlsRecipe
    model: AlternatingLeastSquares
    confidence: ConfidenceWeighting | None

    @classmethod
    def fit(cls, recipe: AlsRecipe, data: TrainingSet) -> AlsModel:
        matrix = _signed(data.matrix, recipe.negative_weight)
        confidence = None
        if recipe.confidence != "none":
            confidence = ConfidenceWeighting.fit(
                matrix, recipe.confidence, k1=recipe.bm25_k1, b=recipe.bm25_b
            )
            matrix = confidence.apply(matrix)
        matrix = als_negatives(matrix, recipe.alpha)
        # implicit reads a negative confidence as "preference 0 with that confidence": the
        # negative evidence of a low rating.
        model = AlternatingLeastSquares(alpha=recipe.alpha, **_shared_options(recipe, data))
        model.fit(matrix.astype(np.float32), show_progress=False)
        return cls(recipe, model, confidence)

    def history(self, history: csr_matrix) -> csr_matrix:
        matrix = _signed(history, self.recipe.negative_weight)
        if self.confidence is not None:
            matrix = self.confidence.apply(matrix)
        return als_negatives(matrix, self.recipe.alpha)

    def score(self, history: csr_matrix) -> Floats:
        if not history.shape[0]:
            return np.empty((0, self.model.item_factors.shape[0]), dtype=np.float32)
        rows = np.arange(history.shape[0])
        vectors = self.model.recalculate_user(rows, self.history(history).astype(np.float32))
        scores: Floats = np.atleast_2d(vectors) @ self.model.item_factors.T
        return scores

    def files(self) -> dict[str, bytes]:
        buffer = io.BytesIO()
        self.model.save(buffer)
        files = {MODEL_FILE: buffer.getvalue()}
        if self.confidence is not None:
            files[CONFIDENCE_FILE] = npz_bytes(**self.confidence.arrays())
        return files


@dataclass
class BprModel:
    recipe: BprRecipe
    model: BayesianPersonalizedRanking

    @classmethod
    def fit(cls, recipe: BprRecipe, data: TrainingSet) -> BprModel:
        model = BayesianPersonalizedRanking(
            learning_rate=recipe.learning_rate, **_shared_options(recipe, data)
        )
        model.fit(data.positives, show_progress=False)
        return cls(recipe, model)

    def score(self, history: csr_matrix) -> Floats:
        factors = self.model.item_factors
        vectors = np.zeros((history.shape[0], factors.shape[1]), dtype=np.float32)
        for index in range(history.shape[0]):
            row = history[index]
            positive = row.data > 0  # BPR learns from positive evidence only
            if positive.any():
                vectors[index] = least_squares_fold_in(
                    factors, row.indices[positive].astype(np.int64), row.data[positive]
                )
        scores: Floats = vectors @ factors.T
        return scores

    def files(self) -> dict[str, bytes]:
        buffer = io.BytesIO()
        self.model.save(buffer)
        return {MODEL_FILE: buffer.getvalue()}
