"""Loading a model version into memory, and keeping the active one current.

Everything a request needs is computed here, once per version, off the request path: id lookup
tables, the item Gram matrix for fold-in, unit-length item factors for similarity. A new version
replaces the old in one assignment, so a request sees one whole model or the other.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import zipfile
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from scipy.sparse import csr_matrix

from recommender import metrics
from recommender.recipes import ColdStartParts, cold_start_parts, item_item_arrays
from recsys_shared.active_version import follow_announcements
from recsys_shared.artifacts import (
    IDS_FILE,
    MODEL_FILE,
    ArtifactError,
    ArtifactStore,
    ItemItemArrays,
    load_npz,
)
from recsys_shared.foldin import (
    ConfidenceWeighting,
    als_negatives,
    least_squares_fold_in,
    signed_history,
)
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import FACTOR_ALGORITHMS, ModelInfo

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]
Indexes = npt.NDArray[np.int64]


class IdIndex:
    """Maps string ids to row numbers with a sorted array: compact for millions of ids (the
    users)."""

    def __init__(self, ids: npt.NDArray[np.str_]) -> None:
        self.ids = ids
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self._order.nbytes + self._sorted.nbytes)

    def name(self, row: int) -> str:
        return str(self.ids[row])

    def get(self, identifier: str) -> int | None:
        position = int(np.searchsorted(self._sorted, identifier))
        if position < len(self._sorted) and self._sorted[position] == identifier:
            return int(self._order[position])
        return None

    def lookup(self, identifiers: list[str]) -> tuple[Indexes, npt.NDArray[np.bool_]]:
        """Row numbers of the ids that are known, and which of the inputs were known."""
        if not identifiers or not len(self._sorted):
            return np.empty(0, dtype=np.int64), np.zeros(len(identifiers), dtype=bool)
        wanted = np.asarray(identifiers, dtype=np.str_)
        positions = np.searchsorted(self._sorted, wanted)
        positions = np.minimum(positions, len(self._sorted) - 1)
        known = self._sorted[positions] == wanted
        return self._order[positions[known]].astype(np.int64), known


class DictIndex:
    """The same mapping in a dict and a list: a few times faster per id than the sorted
    array, for ten times its memory (about 100 bytes an id), so it holds the items, which
    every request looks up (the user's history) and names (the list it returns)."""

    def __init__(self, ids: npt.NDArray[np.str_]) -> None:
        self._names: list[str] = ids.tolist()
        self._rows = {identifier: row for row, identifier in enumerate(self._names)}

    def __len__(self) -> int:
        return len(self._names)

    def name(self, row: int) -> str:
        return self._names[row]

    def get(self, identifier: str) -> int | None:
        return self._rows.get(identifier)

    def lookup(self, identifiers: list[str]) -> tuple[Indexes, npt.NDArray[np.bool_]]:
        """Row numbers of the ids that are known, and which of the inputs were known."""
        # -1 for an unknown id, with no Python-level loop: twice as fast as list comprehensions
        # (5,000 ids, a user at HISTORY_CAP: 0.3 ms against 0.64, micro-benchmarked).
        found = np.fromiter(
            map(self._rows.get, identifiers, repeat(-1)), dtype=np.int64, count=len(identifiers)
        )
        known = found >= 0
        return found[known], known


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A version in memory. A factor recipe (ALS, BPR) has ``user_factors``/``item_factors``;
    an item-item recipe (item-kNN, EASE, hybrid) has ``item_item`` and empty factor arrays.
    ``content`` (the content model's neighbours) and ``cold`` (rows of items no training user
    touched) serve cold start; see :mod:`recommender.ranking`."""

    info: ModelInfo
    users: IdIndex
    items: DictIndex
    user_factors: Floats
    item_factors: Floats
    unit_item_factors: Floats
    model: Any  # an implicit model, used for its exact fold-in (recalculate_user)
    item_item: ItemItemArrays | None = None
    content: csr_matrix | None = None
    cold: npt.NDArray[np.bool_] | None = None
    confidence: ConfidenceWeighting | None = None

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def negative_weight(self) -> float:
        return self.info.recipe.negative_weight if self.info.recipe is not None else 0.0

    @property
    def trained_through(self) -> float:
        """Users updated after this moment have events the model has not seen."""
        return self.info.data.snapshot_created_at

    def named(self, rows: Indexes, scores: Floats) -> list[tuple[str, float]]:
        """Ranked item rows as (item id, score) pairs."""
        name = self.items.name
        return [
            (name(row), score) for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
        ]

    def fold_in(self, item_rows: Indexes, weights: Floats) -> Floats:
        """A fresh user vector from their (signed, stored) weights, against the fixed item
        factors, weighted as the recipe was trained."""
        n_items = self.item_factors.shape[0]
        signed = signed_history(weights, self.negative_weight)
        history = csr_matrix(
            (signed, (np.zeros(len(item_rows), dtype=np.int32), item_rows)), shape=(1, n_items)
        )
        if isinstance(self.model, AlternatingLeastSquares):
            if self.confidence is not None:
                history = self.confidence.apply(history)
            history = als_negatives(history, float(self.model.alpha))
            vector: Floats = self.model.recalculate_user(0, history)
            return vector
        positive = signed > 0  # BPR: positive evidence only
        return least_squares_fold_in(self.item_factors, item_rows[positive], signed[positive])


def load_model(store: ArtifactStore, info: ModelInfo) -> LoadedModel:
    """Read, verify and prepare a version. CPU work: run it in a thread, never on the loop."""
    if not info.artifact_url:
        raise ArtifactError(f"Model version {info.version} has no artifact.")
    folder = info.artifact_url.removeprefix(store.base_url + "/")
    _, files = store.read_bundle(folder)
    try:
        ids = load_npz(files[IDS_FILE])
        user_ids, item_ids = ids["user_ids"], ids["item_ids"]
        extras = cold_start_parts(files, ids, len(item_ids))
        if info.algorithm not in FACTOR_ALGORITHMS:
            return _item_item_model(info, files, user_ids, item_ids, extras)
        model_class = (
            AlternatingLeastSquares if info.algorithm == "als" else BayesianPersonalizedRanking
        )
        model = model_class.load(io.BytesIO(files[MODEL_FILE]))
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError) as error:
        # Whole and checksummed, yet not a model: refused like any broken artifact.
        raise ArtifactError(f"Model version {info.version} cannot be read: {error}") from error
    if model.item_factors is None or model.user_factors is None:
        raise ArtifactError(f"Model version {info.version} has no factors.")
    model.num_threads = 1  # one request is one user: threads would only add overhead
    item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    if isinstance(model, AlternatingLeastSquares):
        _ = model.YtY  # computed and cached now, not on the first request
    norms = np.linalg.norm(item_factors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    loaded = LoadedModel(
        info=info,
        users=IdIndex(user_ids),
        items=DictIndex(item_ids),
        user_factors=user_factors,
        item_factors=item_factors,
        unit_item_factors=np.ascontiguousarray(item_factors / norms, dtype=np.float32),
        model=model,
        content=extras.content,
        cold=extras.cold,
        confidence=extras.confidence,
    )
    if len(loaded.items) != item_factors.shape[0] or len(loaded.users) != user_factors.shape[0]:
        raise ArtifactError(f"Model version {info.version}: id tables do not match the factors.")
    return loaded


def _item_item_model(
    info: ModelInfo,
    files: dict[str, bytes],
    user_ids: npt.NDArray[np.str_],
    item_ids: npt.NDArray[np.str_],
    extras: ColdStartParts,
) -> LoadedModel:
    no_factors = np.empty((0, 0), dtype=np.float32)
    return LoadedModel(
        info=info,
        users=IdIndex(user_ids),
        items=DictIndex(item_ids),
        user_factors=no_factors,
        item_factors=no_factors,
        unit_item_factors=no_factors,
        model=None,
        item_item=item_item_arrays(files, len(item_ids), info.version),
        content=extras.content,
        cold=extras.cold,
    )


class ModelHolder:
    """The model this replica serves, kept equal to the registry's active version.

    Learns of a new version from the registry's notification channel, with polling as the
    fallback for missed messages. A version that fails to load is reported and retried with
    backoff while the previous model keeps serving.
    """

    def __init__(
        self,
        client: RedisClient,
        store: ArtifactStore,
        *,
        poll_seconds: float,
        notifications: RedisClient | None = None,
    ) -> None:
        """``notifications``: a client subscribed to the registry's channel (see
        :meth:`watch`); without one, the holder polls."""
        self.redis = client
        self.notifications = notifications
        self.registry = ModelRegistry(client)
        self.store = store
        self.poll_seconds = poll_seconds
        self.current: LoadedModel | None = None
        self.active_version: int | None = None
        self.last_error: str | None = None
        # version → (when to try again, failed attempts): 1 s, then doubling up to 60 s.
        self._failed: dict[int, tuple[float, int]] = {}

    async def refresh(self) -> None:
        """Load the active version if it is not the one in memory."""
        active = await self.registry.active_version()
        self.active_version = active
        if self.current is not None and self.current.version == active:
            self.last_error = None  # an error of another version (rolled back from) is stale
            return
        if active is None:
            return
        retry_at, attempts = self._failed.get(active, (0.0, 0))
        if time.monotonic() < retry_at:
            return
        try:
            info = await self.registry.get(active)
            started = time.perf_counter()
            loaded = await asyncio.to_thread(load_model, self.store, info)
        except (ArtifactError, OSError, ValueError, KeyError) as error:
            delay = min(60.0, 2.0**attempts)
            self._failed[active] = (time.monotonic() + delay, attempts + 1)
            self.last_error = f"version {active} failed to load: {error}"
            metrics.MODEL_LOAD_FAILURES.inc()
            log.error("keeping version %s: %s", self.serving_version, self.last_error)
            return
        previous = self.current
        self.current = loaded  # the swap: one assignment, requests in flight keep their model
        self.last_error = None
        self._failed.pop(active, None)
        metrics.MODEL_VERSION.set(active)
        metrics.MODEL_CREATED.set(info.created_at.timestamp())
        metrics.MODEL_LOAD_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "serving model version %d (was %s), loaded in %.2fs",
            active,
            previous.version if previous else None,
            time.perf_counter() - started,
        )

    @property
    def serving_version(self) -> int | None:
        return self.current.version if self.current else None

    async def watch(self) -> None:
        """Run forever: refresh on every notification, and at least every ``poll_seconds``."""
        await follow_announcements(
            self.refresh,
            notifications=self.notifications,
            poll_seconds=self.poll_seconds,
            what="model watcher",
        )
