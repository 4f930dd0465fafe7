"""The recipe interface: what the worker fits, judges, and writes for the recommender.

A recipe (``recsys_shared.schemas.Recipe``) is a typed description: an algorithm and its
parameters. Fitting it on a :class:`TrainingSet` gives a :class:`FittedRecipe`, which scores users
given their history (the stored, signed weights the recommender will read for them too) and
writes itself as npz files, read back with ``allow_pickle=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recsys_shared.schemas import Recipe

Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainingSet:
    """What a recipe is fitted on.

    ``matrix`` is users × items of signed weights, already weighted by age for the recipe's
    half-life; ``content`` is the content model's item neighbours over the same items (None
    without item metadata); ``threads`` and ``seed`` make fits reproducible.
    """

    matrix: csr_matrix
    content: csr_matrix | None
    threads: int
    seed: int

    @property
    def positives(self) -> csr_matrix:
        """Only the positive evidence, for the algorithms that know no other."""
        positive = self.matrix.copy()
        positive.data = np.maximum(positive.data, 0)
        positive.eliminate_zeros()
        return positive


class FittedRecipe(Protocol):
    """A trained model of one recipe."""

    @property
    def recipe(self) -> Recipe:
        """The recipe it was fitted from."""
        ...

    def score(self, history: csr_matrix) -> Floats:
        """Scores of every item for each row of ``history`` (users' stored signed weights)."""
        ...

    def files(self) -> dict[str, bytes]:
        """The model as npz files, named as ``recsys_shared.artifacts`` says."""
        ...
