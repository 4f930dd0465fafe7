"""Experiment versions in memory beside the active one, within a memory bound.

An experiment pins each variant to a version, so a replica serves several at once: the
active version (``ModelHolder``) and the running experiment's. They are loaded when an
experiment starts (every ``MODEL_POLL_SECONDS`` this replica looks for one), or on the first
request that names one, and dropped when it ends. Before loading, the version's size (from its
artifact's manifest) is checked against ``MODEL_MEMORY_LIMIT_MB`` together with what is held;
a version that does not fit, or whose artifact is missing or fails its checksum, is refused
(``ModelUnavailable``) and its requests get popular items instead.

Any version with a verified artifact can be a variant, whatever its registry status: one the
offline gate rejected may be tried online.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import KW_ONLY, dataclass, field

from recommender import metrics
from recommender.model_store import LoadedModel, ModelHolder, load_model
from recsys_shared.artifacts import ArtifactError
from recsys_shared.background import repeat
from recsys_shared.errors import ModelUnavailable, StoreUnavailable, UnknownModelVersion
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.schemas import Decision

log = logging.getLogger(__name__)

#: A version in memory takes about this many times its artifact (unit-length factor copies,
#: id tables and their dicts).
MEMORY_PER_ARTIFACT_BYTE = 2.5
_ID_BYTES = 100  # an item id in the dict index


def resident_bytes(model: LoadedModel) -> int:
    """An estimate of what a loaded version holds in memory."""
    arrays = [model.user_factors, model.item_factors, model.unit_item_factors]
    total = sum(array.nbytes for array in arrays) + model.users.nbytes
    total += len(model.items) * _ID_BYTES
    if model.item_item is not None:
        sparse = model.item_item.sparse
        total += model.item_item.block.nbytes + model.item_item.columns.nbytes
        total += sparse.data.nbytes + sparse.indices.nbytes + sparse.indptr.nbytes
    if model.content is not None:
        total += model.content.data.nbytes + model.content.indices.nbytes
    return int(total)


# eq=False: a replica's set of held versions is one live object, compared by identity.
@dataclass(eq=False)
class VariantModels:
    holder: ModelHolder
    experiments: ExperimentStore
    _: KW_ONLY
    memory_limit_bytes: int
    poll_seconds: float
    held: dict[int, LoadedModel] = field(init=False, default_factory=dict)
    _loading: dict[int, asyncio.Future[LoadedModel]] = field(init=False, default_factory=dict)
    #: Versions refused, until when the refusal stands: without it every request of a refused
    #: variant's users would read the registry and the artifact's manifest again (a corrupt
    #: artifact: the whole artifact and its checksum). One entry per version.
    _refused: dict[int, tuple[float, ModelUnavailable]] = field(init=False, default_factory=dict)

    async def get(self, version: int) -> LoadedModel:
        """The version, from memory or loaded now (once, however many requests wait for it)."""
        held = self.held.get(version)
        if held is not None:
            return held
        current = self.holder.current
        if current is not None and current.version == version:
            return current
        refused = self._refused.get(version)
        if refused is not None and time.monotonic() < refused[0]:
            raise ModelUnavailable(refused[1].detail)  # tried again every poll_seconds
        pending = self._loading.get(version)
        if pending is None:
            pending = asyncio.ensure_future(self._refusal_kept(version))
            self._loading[version] = pending
            pending.add_done_callback(lambda _: self._loading.pop(version, None))
        return await asyncio.shield(pending)

    async def prepare(self, version: int) -> LoadedModel:
        """Load ``version`` now if it is servable here (an experiment is about to use it)."""
        self._refused.pop(version, None)  # tried afresh: what refused it may have changed
        model = await self.get(version)
        # Held even when it is the active version (the same object, counted once): it stays
        # when a retrain replaces the active one, as a pinned variant must.
        self.held[version] = model
        return model

    def memory_bytes(self) -> int:
        models = {id(model): model for model in self.held.values()}
        if self.holder.current is not None:
            models[id(self.holder.current)] = self.holder.current
        return sum(resident_bytes(model) for model in models.values())

    async def _refusal_kept(self, version: int) -> LoadedModel:
        try:
            model = await self._load(version)
        except ModelUnavailable as error:
            self._refused[version] = (time.monotonic() + self.poll_seconds, error)
            raise
        self._refused.pop(version, None)
        return model

    async def _load(self, version: int) -> LoadedModel:
        try:
            info = await self.holder.registry.get(version)
        except UnknownModelVersion as error:
            metrics.VARIANT_LOAD_REFUSALS.labels(metrics.VariantRefusal.UNKNOWN).inc()
            raise ModelUnavailable(f"Model version {version} does not exist.") from error
        store = self.holder.store
        if not info.artifact_url:
            metrics.VARIANT_LOAD_REFUSALS.labels(metrics.VariantRefusal.ARTIFACT).inc()
            raise ModelUnavailable(f"Model version {version} has no artifact.")
        folder = info.artifact_url.removeprefix(store.base_url + "/")
        started = time.perf_counter()
        try:
            artifact_bytes = await asyncio.to_thread(store.bundle_bytes, folder)
            needed = int(artifact_bytes * MEMORY_PER_ARTIFACT_BYTE)
            held = self.memory_bytes()
            if held + needed > self.memory_limit_bytes:
                metrics.VARIANT_LOAD_REFUSALS.labels(metrics.VariantRefusal.MEMORY).inc()
                raise ModelUnavailable(
                    f"Model version {version} needs about {needed >> 20} MiB; this replica "
                    f"holds {held >> 20} MiB of {self.memory_limit_bytes >> 20} MiB "
                    "(MODEL_MEMORY_LIMIT_MB)."
                )
            model = await asyncio.to_thread(load_model, store, info)
        except (ArtifactError, OSError, ValueError, KeyError) as error:
            metrics.VARIANT_LOAD_REFUSALS.labels(metrics.VariantRefusal.ARTIFACT).inc()
            raise ModelUnavailable(f"Model version {version} cannot be loaded: {error}") from error
        self.held[version] = model
        self._publish()
        log.info(
            "holding experiment version %d (%.2fs to load)", version, time.perf_counter() - started
        )
        return model

    async def refresh(self) -> None:
        """Hold the running experiment's versions; drop the others."""
        running = await self.experiments.running()
        wanted: set[int] = set()
        if running is not None and running.state.decision is Decision.RUNNING:
            wanted = {variant.model_version for variant in running.definition.variants}
        for version in set(self.held) - wanted:
            del self.held[version]
            log.info("dropped experiment version %d", version)
        for version in sorted(wanted - set(self.held)):
            try:
                await self.prepare(version)
            except ModelUnavailable as error:
                log.error("experiment version not held: %s", error.detail)
        self._publish()

    def _publish(self) -> None:
        metrics.VARIANT_MODELS.set(len(self.held))
        metrics.MODEL_MEMORY_BYTES.set(self.memory_bytes())

    async def watch(self) -> None:
        await repeat(
            self.refresh,
            pause=self.poll_seconds,
            survives=(StoreUnavailable,),
            on_error=lambda error: log.warning(
                "experiment watcher waiting for redis: %s", error.detail
            ),
        )
