"""Erased users out of the snapshots and model artifacts written before their erasure.

The feature-store keeps a tombstone per erased user (a digest of the id) in each partition.
This task, sent by the gateway after every erasure and run on a schedule
(``ERASURE_REWRITE_SECONDS``), reads the tombstones and rewrites every snapshot and every model
artifact that still holds one of those users: their interactions out of the snapshot, their
rows out of the model's user-indexed arrays (``user_*``, e.g. implicit's ``user_factors``) and
id table, new checksums in the manifest and the registry. A rollback to a rewritten version
cannot personalise the user; before the rewrite, no recommender does either (a user with no
features is never personalised from a model's row).

Folders nothing reads are deleted rather than rewritten (``pruning.remove_abandoned``): a
model folder no registry entry names and a snapshot folder whose export never finished. One
that may still be being written is left for a later pass (the tombstones outlive it): it is
then registered (or complete) and rewritten, or abandoned and deleted.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys_shared import keys
from recsys_shared.artifacts import (
    IDS_FILE,
    MANIFEST,
    MODEL_FILE,
    SNAPSHOT_FILE,
    SNAPSHOTS_FOLDER,
    ArtifactStore,
    load_npz,
    model_folder,
    npz_bytes,
    snapshot_folder,
)
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from retraining_worker.pruning import remove_abandoned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErasureRewrite:
    snapshots: int
    models: int
    #: Folders deleted instead (``pruning.remove_abandoned``).
    removed: int = 0


async def tombstones(client: RedisClient, partitions: keys.Partitions) -> set[str]:
    replies = await client.execute_many([("HKEYS", p.erased) for p in partitions.all])
    return {digest for reply in replies for digest in reply}


def erased_rows(user_ids: npt.NDArray[np.str_], erased: set[str]) -> npt.NDArray[np.bool_]:
    """Which users of an id table were erased."""
    return np.fromiter(
        (keys.user_digest(str(user)) in erased for user in user_ids),
        dtype=bool,
        count=len(user_ids),
    )


def without_users(
    arrays: Mapping[str, npt.NDArray[Any]], gone: npt.NDArray[np.bool_]
) -> dict[str, npt.NDArray[Any]]:
    """A snapshot's arrays without the interactions of the ``gone`` users, rows renumbered."""
    keep_users = ~gone
    renumbered = np.cumsum(keep_users) - 1
    keep = keep_users[arrays["rows"]]
    return {
        **arrays,
        "user_ids": arrays["user_ids"][keep_users],
        "rows": renumbered[arrays["rows"][keep]].astype(np.int32),
        "cols": arrays["cols"][keep],
        "weights": arrays["weights"][keep],
        "times": arrays["times"][keep],
    }


@dataclass(frozen=True)
class _ErasedBundle:
    """A bundle that holds erased users: its metadata (the manifest without its file list,
    which ``write_bundle`` makes anew), its files, the arrays of the file whose ``user_ids``
    name its users, and which of them are erased."""

    metadata: dict[str, Any]
    files: dict[str, bytes]
    arrays: dict[str, npt.NDArray[Any]]
    gone: npt.NDArray[np.bool_]


def _erased_bundle(
    store: ArtifactStore, folder: str, ids_file: str, erased: set[str]
) -> _ErasedBundle | None:
    """The bundle in ``folder`` if any user its ``ids_file`` names is erased, else None
    (None too without a manifest: see ``_unpublished``)."""
    if _unpublished(store, folder):
        return None
    manifest, files = store.read_bundle(folder)
    arrays = load_npz(files[ids_file])
    gone = erased_rows(arrays["user_ids"], erased)
    if not gone.any():
        return None
    metadata = {key: value for key, value in manifest.items() if key != "files"}
    return _ErasedBundle(metadata, files, arrays, gone)


def _unpublished(store: ArtifactStore, folder: str) -> bool:
    """A folder without a manifest: skipped, not fatal, so one such folder cannot stop every
    other rewrite. A snapshot's export may be writing it right now, and it does not exclude a
    user erased meanwhile (it fixes its id, then reads the users a chunk at a time: one read
    before the erasure stays in it). The tombstones outlive it: the next pass (at most
    ``ERASURE_REWRITE_SECONDS`` later) finds the manifest and rewrites it, or the export
    crashed and ``remove_abandoned`` deletes the folder once it is clearly dead. A registered
    model's folder loses its manifest only to a pruning deleting it meanwhile."""
    if store.exists(f"{folder}/{MANIFEST}"):
        return False
    log.warning("skipped %s: no manifest (being written or deleted)", folder)
    return True


def rewrite_snapshot(store: ArtifactStore, name: str, erased: set[str]) -> bool:
    folder = snapshot_folder(name)
    bundle = _erased_bundle(store, folder, SNAPSHOT_FILE, erased)
    if bundle is None:
        return False
    rewritten = without_users(bundle.arrays, bundle.gone)
    metadata = {
        **bundle.metadata,
        "users": len(rewritten["user_ids"]),
        "interactions": len(rewritten["rows"]),
    }
    store.write_bundle(folder, {SNAPSHOT_FILE: npz_bytes(**rewritten)}, metadata)
    return True


def rewrite_model(store: ArtifactStore, version: int, erased: set[str]) -> str | None:
    """The new checksum of the model file when users were taken out, else None."""
    folder = model_folder(version)
    bundle = _erased_bundle(store, folder, IDS_FILE, erased)
    if bundle is None:
        return None
    ids, gone, files = bundle.arrays, bundle.gone, bundle.files
    model = load_npz(files[MODEL_FILE])
    n_users = len(gone)
    for name, array in model.items():
        if name.startswith("user") and array.ndim >= 1 and array.shape[0] == n_users:
            model[name] = array[~gone]
    rewritten = {
        MODEL_FILE: _npz(model),
        IDS_FILE: npz_bytes(**{**ids, "user_ids": ids["user_ids"][~gone]}),
        **{name: data for name, data in files.items() if name not in (MODEL_FILE, IDS_FILE)},
    }
    written = store.write_bundle(folder, rewritten, bundle.metadata)
    return str(written["files"][MODEL_FILE]["sha256"])


def _npz(arrays: Mapping[str, npt.NDArray[Any]]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


async def erase_from_artifacts(
    client: RedisClient, store: ArtifactStore, partitions: keys.Partitions
) -> ErasureRewrite:
    erased = await tombstones(client, partitions)
    if not erased:
        return ErasureRewrite(0, 0)
    registry = ModelRegistry(client)
    # First: an orphan is never rewritten (only registered versions are), so deleting it is
    # the only way an erased user leaves it.
    removed = await remove_abandoned(registry, store)
    snapshots = 0
    for name in await asyncio.to_thread(store.list_dirs, SNAPSHOTS_FOLDER):
        snapshots += int(await asyncio.to_thread(rewrite_snapshot, store, name, erased))
    models = 0
    for info in await registry.list():
        if not info.artifact_url:
            continue
        checksum = await asyncio.to_thread(rewrite_model, store, info.version, erased)
        if checksum is not None:
            await registry.set_checksum(info.version, checksum)
            models += 1
    if snapshots or models:
        log.info("erased users removed from %d snapshot(s), %d model(s)", snapshots, models)
    return ErasureRewrite(snapshots, models, removed)
