"""What the registry and the artifact store keep: enough to roll back, no more.

After every publish and on a schedule (``PRUNE_SECONDS``): artifacts beyond the newest
``KEEP_MODEL_VERSIONS`` (never the active version's, its rollback target's, nor a running
experiment's variants'), snapshots
beyond the newest ``KEEP_SNAPSHOTS``, and registry records (with their snapshot→version keys)
beyond the newest ``KEEP_MODEL_RECORDS``. Task records and delivery counts expire by their TTL
on the broker; Celery's results by ``result_expires``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from recsys_shared import keys
from recsys_shared.artifacts import SNAPSHOTS_FOLDER, ArtifactStore, model_folder, snapshot_folder
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo
from recsys_shared.streams import parse_stream_id
from retraining_worker.config import Settings

log = logging.getLogger(__name__)


def rollback_target(versions: list[ModelInfo], active: int | None) -> ModelInfo | None:
    """The version the active one replaced (a rollback goes there). A version activated more
    than once leaves several that name it as their successor: it replaced the one of them
    that was active last."""
    replaced = [info for info in versions if active is not None and info.replaced_by == active]
    return max(replaced, key=_activated_at, default=None)


async def _experiment_versions(registry: ModelRegistry) -> set[int | None]:
    """The running experiment's variants: recommenders serve them beside the active one."""
    # Reading the definition needs no partitions (only the counters are partitioned).
    running = await ExperimentStore(registry.redis, keys.Partitions(1)).running()
    if running is None:
        return set()
    return {variant.model_version for variant in running.definition.variants}


def _activated_at(info: ModelInfo) -> datetime:
    return info.activated_at or datetime.min.replace(tzinfo=UTC)


async def prune(registry: ModelRegistry, store: ArtifactStore, settings: Settings) -> None:
    versions = await registry.list()
    active = await registry.active_version()
    target = rollback_target(versions, active)
    protected = {active, target.version if target else None}
    protected |= await _experiment_versions(registry)
    with_artifact = [info for info in versions if info.artifact_url]
    kept = {info.version for info in with_artifact[: settings.keep_model_versions]} | protected
    for info in with_artifact:
        if info.version not in kept:
            await asyncio.to_thread(store.delete_tree, model_folder(info.version))
            await registry.drop_artifact(info.version)
            log.info("deleted the artifact of version %d", info.version)
    for info in versions[settings.keep_model_records :]:
        if info.version not in protected:
            await registry.forget(info.version, info.snapshot_id)
    snapshots = sorted(
        await asyncio.to_thread(store.list_dirs, SNAPSHOTS_FOLDER),
        key=lambda name: parse_stream_id(name.partition(".")[0]),
    )
    for name in snapshots[: -settings.keep_snapshots]:
        await asyncio.to_thread(store.delete_tree, snapshot_folder(name))
