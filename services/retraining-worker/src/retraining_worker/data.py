"""Snapshot arrays as sparse matrices, and the time-ordered holdout split.

The holdout is the most recent slice of time, never a random sample: a model is judged on what
users did *after* the data it learned from, as it will be in production. Users active in that
slice reveal the first half of their recent interactions (folded in, as the recommender does
for fresh events) and are asked to predict the items of the second half they liked (positive
weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

Ints = npt.NDArray[np.int32]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Interactions:
    user_ids: npt.NDArray[np.str_]
    item_ids: npt.NDArray[np.str_]
    rows: Ints
    cols: Ints
    weights: Floats
    times: npt.NDArray[np.float64]

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]]) -> Interactions:
        return cls(
            user_ids=arrays["user_ids"],
            item_ids=arrays["item_ids"],
            rows=arrays["rows"].astype(np.int32),
            cols=arrays["cols"].astype(np.int32),
            weights=arrays["weights"].astype(np.float32),
            times=arrays["times"].astype(np.float64),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    def __len__(self) -> int:
        return len(self.rows)

    def matrix(
        self,
        mask: npt.NDArray[np.bool_] | None = None,
        *,
        signed: bool = False,
        weights: Floats | None = None,
    ) -> csr_matrix:
        """User × item matrix of the interactions (optionally a subset): only the positive
        weights, or with ``signed`` the negative ones too (low ratings). ``weights`` replaces
        the stored weights (e.g. decayed by age)."""
        rows, cols = self.rows, self.cols
        values = self.weights if weights is None else weights
        if mask is not None:
            rows, cols, values = rows[mask], cols[mask], values[mask]
        kept = values != 0 if signed else values > 0
        matrix = csr_matrix(
            (values[kept], (rows[kept], cols[kept])), shape=self.shape, dtype=np.float32
        )
        matrix.sum_duplicates()
        return matrix

    def subset(self, mask: npt.NDArray[np.bool_]) -> Interactions:
        """The interactions under ``mask``, on the same id tables (a validation split)."""
        return Interactions(
            self.user_ids,
            self.item_ids,
            self.rows[mask],
            self.cols[mask],
            self.weights[mask],
            self.times[mask],
        )

    def with_items(self, item_ids: npt.NDArray[np.str_]) -> Interactions:
        """The same interactions with ``item_ids`` not yet known appended to the item table
        (catalogued items nobody interacted with: content models can still place them)."""
        known = set(self.item_ids.tolist())
        extra = [item for item in item_ids.tolist() if item not in known]
        if not extra:
            return self
        return Interactions(
            self.user_ids,
            np.concatenate((self.item_ids, np.asarray(extra, dtype=np.str_))),
            self.rows,
            self.cols,
            self.weights,
            self.times,
        )

    def shuffled(self, seed: int) -> Interactions:
        """The same interactions with items reassigned at random: a model of noise, for tests
        and for demonstrating that the gate rejects a degraded model."""
        generator = np.random.default_rng(seed)
        return Interactions(
            self.user_ids,
            self.item_ids,
            self.rows,
            generator.permutation(self.cols),
            self.weights,
            self.times,
        )


@dataclass(frozen=True)
class HoldoutSplit:
    """``train`` marks interactions before the cut; for each evaluated user, ``revealed`` are
    their interactions the model may use (train plus the early half of their recent ones) and
    ``targets`` the items to predict."""

    train: npt.NDArray[np.bool_]
    revealed_mask: npt.NDArray[np.bool_]
    users: Ints
    revealed: csr_matrix
    targets: list[set[int]]
    cut_time: float

    @classmethod
    def of(
        cls,
        data: Interactions,
        train: npt.NDArray[np.bool_],
        revealed_mask: npt.NDArray[np.bool_],
        users: list[int],
        targets: list[set[int]],
        cut_time: float,
    ) -> HoldoutSplit:
        """The split of ``data`` whose evaluated ``users`` may use what ``revealed_mask``
        marks."""
        # What serving would read of each user: every stored weight, negative ones too.
        revealed = data.matrix(revealed_mask, signed=True)
        user_rows = np.asarray(users, dtype=np.int32)
        return cls(
            train=train,
            revealed_mask=revealed_mask,
            users=user_rows,
            revealed=revealed[user_rows] if len(user_rows) else revealed[:0],
            targets=targets,
            cut_time=cut_time,
        )


def temporal_split(data: Interactions, holdout_fraction: float) -> HoldoutSplit:
    """Interactions from the cut time on held out; each user with at least two of them
    reveals the earlier half and is asked for the later half.

    Targets are the later half's items with positive weight: a low rating (negative weight)
    or a neutral one says the user did not want the item, so ranking it is no hit. A user
    whose later half has no such item is not evaluated (nothing is revealed of their recent
    interactions either). Whatever the weight, the item counts as seen once revealed.
    """
    order = np.lexsort((data.rows, data.times))
    cut_index = min(int(len(order) * (1.0 - holdout_fraction)), len(order) - 1)
    cut_time = float(data.times[order[cut_index]]) if len(order) else 0.0
    train = data.times < cut_time
    recent = np.flatnonzero(~train)
    recent = recent[np.lexsort((data.cols[recent], data.times[recent], data.rows[recent]))]
    users: list[int] = []
    targets: list[set[int]] = []
    revealed_mask = train.copy()
    boundaries = np.flatnonzero(np.diff(data.rows[recent])) + 1
    for group in np.split(recent, boundaries):
        # The halves split every interaction, whatever its weight: what a user reveals does
        # not depend on how they rated what came after.
        half = len(group) // 2
        later = group[half:]
        wanted = {int(col) for col in data.cols[later[data.weights[later] > 0]]}
        if not half or not wanted:
            continue
        revealed_mask[group[:half]] = True
        users.append(int(data.rows[group[0]]))
        targets.append(wanted)
    return HoldoutSplit.of(data, train, revealed_mask, users, targets, cut_time)


def seen_matrix(data: Interactions, mask: npt.NDArray[np.bool_], users: Ints) -> csr_matrix:
    """Every interaction (positive or not) under ``mask``, for the evaluated users: what must not
    be recommended to them again."""
    seen = csr_matrix(
        (np.ones(int(mask.sum()), dtype=np.float32), (data.rows[mask], data.cols[mask])),
        shape=data.shape,
    )
    return seen[users]


def per_user_split(data: Interactions, holdout_fraction: float) -> HoldoutSplit:
    """Each user's most recent ``holdout_fraction`` of interactions held out (by time, ties
    by item), to be predicted from the rest: a validation split with every active user in it.

    Targets are the held-out items with positive weight that the user had not touched before.
    """
    order = np.lexsort((data.cols, data.times, data.rows))
    train = np.ones(len(data), dtype=bool)
    boundaries = np.flatnonzero(np.diff(data.rows[order])) + 1
    for group in np.split(order, boundaries) if len(order) else []:
        held = int(len(group) * holdout_fraction)
        if held and len(group) - held >= 1:
            train[group[len(group) - held :]] = False
    users: list[int] = []
    targets: list[set[int]] = []
    later = np.flatnonzero(~train & (data.weights > 0))
    earlier_items: dict[int, set[int]] = {}
    for row, col in zip(data.rows[train].tolist(), data.cols[train].tolist(), strict=True):
        earlier_items.setdefault(row, set()).add(col)
    wanted: dict[int, set[int]] = {}
    for row, col in zip(data.rows[later].tolist(), data.cols[later].tolist(), strict=True):
        if col not in earlier_items.get(row, set()):
            wanted.setdefault(row, set()).add(col)
    for row in sorted(wanted):
        users.append(row)
        targets.append(wanted[row])
    held_times = data.times[~train]
    cut_time = float(held_times.min()) if len(held_times) else 0.0
    return HoldoutSplit.of(data, train, train, users, targets, cut_time)
