"""What the registry and the artifact store keep: enough to roll back, no more.

After every publish and on a schedule (``PRUNE_SECONDS``): artifacts beyond the newest
``KEEP_MODEL_VERSIONS`` (never the active version's, its rollback target's, nor a running
experiment's variants'), snapshots
beyond the newest ``KEEP_SNAPSHOTS``, and registry records (with their snapshot→version keys)
beyond the newest ``KEEP_MODEL_RECORDS``. Task records and delivery counts expire by their TTL
on the broker; Celery's results by ``result_expires``.

Folders that nothing will ever read go too, once nothing can still be writing them
(:func:`remove_abandoned`, also run by the erasure): a model folder no registry entry names (a
training that died between its artifact and its publish) and a snapshot folder without a
manifest (a crashed export).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime

from recsys_shared import keys
from recsys_shared.artifacts import (
    MANIFEST,
    MODELS_FOLDER,
    SNAPSHOTS_FOLDER,
    ArtifactStore,
    model_folder,
    snapshot_folder,
    snapshot_order,
)
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo
from retraining_worker.config import Settings

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"v([0-9]+)")
#: An unregistered model folder younger than this stays. Its version is already below any
#: training in progress (see ``_oldest_in_progress``); the age covers the one case the lock
#: cannot: a training whose lock expired unnoticed (its renewer flags the loss a few Redis
#: timeouts late) may still publish the folder it has just written, within a Redis timeout.
ORPHAN_MODEL_AGE_SECONDS = 300.0
#: A snapshot folder without a manifest unchanged for this long is a crashed export, not one
#: being written. Nothing else tells them apart (no lock or counter guards an export), but the
#: feature-store creates the folder only once its files are built in memory, then writes them
#: one after the other, the manifest last: a live export changes the folder at least once per
#: file written (a local store at the start of each too), and writing one file takes nowhere
#: near an hour.
ABANDONED_SNAPSHOT_AGE_SECONDS = 3600.0


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
    active_snapshot = await _prune_versions(registry, store, settings)
    await remove_abandoned(registry, store)
    await asyncio.to_thread(_prune_snapshots, store, settings.keep_snapshots, active_snapshot)


async def _prune_versions(
    registry: ModelRegistry, store: ArtifactStore, settings: Settings
) -> str | None:
    """Prune artifacts and records; returns the active version's snapshot id."""
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
    return next((info.snapshot_id for info in versions if info.version == active), None)


def _prune_snapshots(store: ArtifactStore, keep: int, active_snapshot: str | None) -> None:
    """Complete snapshots beyond the newest ``keep``, except the active version's: the drift
    check compares the traffic with what that version learnt from, which a run of refused or
    rejected trainings would otherwise push out. One without a manifest is neither counted
    nor deleted here: it may be the export in progress (``remove_abandoned``)."""
    complete = sorted(
        (order, name)
        for name in store.list_dirs(SNAPSHOTS_FOLDER)
        if (order := snapshot_order(name)) is not None
        and store.exists(f"{snapshot_folder(name)}/{MANIFEST}")
    )
    for _, name in complete[:-keep]:
        if name != active_snapshot:
            store.delete_tree(snapshot_folder(name))


async def remove_abandoned(registry: ModelRegistry, store: ArtifactStore) -> int:
    """Delete the model and snapshot folders nothing reads and nothing is still writing;
    returns how many. They may hold users erased since, whom the erasure's rewrite (which
    reads only registered versions and complete snapshots) would never take out."""
    models = await _remove_orphan_models(registry, store)
    snapshots = await asyncio.to_thread(_remove_abandoned_snapshots, store)
    return models + snapshots


async def _oldest_in_progress(registry: ModelRegistry) -> int:
    """The lowest version a training may still be writing. Versions come from one counter,
    and only the training holding the lock takes one: a version below the counter's belongs
    to a training that had released the lock (or lost it: such a training never publishes)
    before the counter moved on; the counter's own is over too when nobody holds the lock.
    Read in this order (counter, lock, then the registry, then the folders), a training that
    publishes after the registry was read still held the lock before it, so its version is
    at least the one returned: never mistaken for an orphan."""
    allocated = int(await registry.redis.execute("GET", keys.MODEL_VERSION_SEQUENCE) or 0)
    training = bool(await registry.redis.execute("EXISTS", keys.TRAINING_LOCK))
    return allocated if training else allocated + 1


async def _remove_orphan_models(registry: ModelRegistry, store: ArtifactStore) -> int:
    """Model folders of versions no registry entry names (unpublished, or forgotten)."""
    in_progress = await _oldest_in_progress(registry)
    named = {info.version for info in await registry.list() if info.artifact_url}
    removed = 0
    for name in await asyncio.to_thread(store.list_dirs, MODELS_FOLDER):
        match = _MODEL_NAME.fullmatch(name)
        version = int(match.group(1)) if match else None
        if version is None or version in named or version >= in_progress:
            continue
        folder = model_folder(version)
        if folder != f"{MODELS_FOLDER}/{name}":  # not a name model_folder makes: not ours
            continue
        if await asyncio.to_thread(_untouched_for, store, folder, ORPHAN_MODEL_AGE_SECONDS):
            await asyncio.to_thread(store.delete_tree, folder)
            log.info("deleted the artifact of version %d, which was never published", version)
            removed += 1
    return removed


def _remove_abandoned_snapshots(store: ArtifactStore) -> int:
    removed = 0
    for name in store.list_dirs(SNAPSHOTS_FOLDER):
        folder = snapshot_folder(name)
        if snapshot_order(name) is None or store.exists(f"{folder}/{MANIFEST}"):
            continue
        if _untouched_for(store, folder, ABANDONED_SNAPSHOT_AGE_SECONDS):
            store.delete_tree(folder)
            log.info("deleted snapshot %s, whose export never finished", name)
            removed += 1
    return removed


def _untouched_for(store: ArtifactStore, folder: str, seconds: float) -> bool:
    return time.time() - last_change(store, folder) >= seconds


def last_change(store: ArtifactStore, folder: str) -> float:
    """When anything in ``folder`` last changed (its newest file; seconds since the epoch).
    Now when unknown: a file gone between listing and reading was being renamed or deleted
    by someone at work there, and a store that keeps no times must not look old."""
    full = f"{store.root}/{folder}"
    try:
        paths = store.fs.find(full) or [full]  # an empty local folder: its own time
        times: list[float] = [store.fs.modified(path).timestamp() for path in paths]
    except (OSError, NotImplementedError):
        return time.time()
    return max(times)
