"""Loading a model version from its artifact, and keeping the active version in memory (on
every announcement of the registry's channel, or by polling)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from prometheus_client import REGISTRY

from recommender.model_store import ModelHolder, load_model
from recsys_shared import keys
from recsys_shared.artifacts import (
    IDS_FILE,
    MODEL_FILE,
    ArtifactError,
    ArtifactStore,
    model_folder,
    npz_bytes,
)
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo
from recsys_shared.testing import eventually, in_background


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _corrupt(store: ArtifactStore, version: int) -> None:
    """Overwrite bytes of a written model.npz, as bit rot or a torn copy would."""
    path = Path(store.root) / model_folder(version) / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def test_load_model_reads_the_bundle(
    artifact_store: ArtifactStore,
    write_model: Callable[..., ModelInfo],
    als_model: AlternatingLeastSquares,
    clusters: Any,
) -> None:
    info = write_model(1)
    loaded = load_model(artifact_store, info)
    assert loaded.version == 1
    assert loaded.trained_through == clusters.snapshot_at
    np.testing.assert_array_equal(loaded.item_factors, als_model.item_factors)
    np.testing.assert_array_equal(loaded.user_factors, als_model.user_factors)
    assert loaded.users.get("b3") == clusters.user_ids.index("b3")
    assert loaded.items.get("A5") == clusters.item_ids.index("A5")
    norms = np.linalg.norm(loaded.unit_item_factors, axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    # The exact ALS fold-in of a trained user's own history gives back (about) their vector.
    row = clusters.user_ids.index("a0")
    items, _ = loaded.items.lookup(clusters.history["a0"])
    folded = loaded.fold_in(items, np.full(len(items), 4.0, dtype=np.float32))
    cosine = folded @ loaded.user_factors[row]
    cosine /= np.linalg.norm(folded) * np.linalg.norm(loaded.user_factors[row])
    assert cosine > 0.99


def test_a_corrupted_model_file_is_refused(
    artifact_store: ArtifactStore, write_model: Callable[..., ModelInfo]
) -> None:
    info = write_model(1)
    _corrupt(artifact_store, 1)
    with pytest.raises(ArtifactError, match="checksum"):
        load_model(artifact_store, info)


def test_a_missing_artifact_is_refused(
    artifact_store: ArtifactStore, write_model: Callable[..., ModelInfo]
) -> None:
    info = write_model(1)
    with pytest.raises(ArtifactError):
        load_model(artifact_store, info.model_copy(update={"artifact_url": None}))
    artifact_store.delete_tree(model_folder(1))
    with pytest.raises(ArtifactError):
        load_model(artifact_store, info)


def _unreadable(good: bytes, kind: str) -> bytes:
    return {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not npz": b"not a model at all" * 8,
        "crc": good[:200] + bytes(byte ^ 0xFF for byte in good[200:260]) + good[260:],
        "no factors": npz_bytes(factors=np.arange(3)),
    }[kind]


UNREADABLE = ["truncated", "empty", "not npz", "crc", "no factors"]


@pytest.mark.parametrize("kind", UNREADABLE)
def test_a_model_file_that_cannot_be_read_is_refused(
    artifact_store: ArtifactStore,
    write_model: Callable[..., ModelInfo],
    als_model_bytes: bytes,
    kind: str,
) -> None:
    # Written whole, with a matching checksum, yet not a model (a writer bug, another format).
    info = write_model(1, model_bytes=_unreadable(als_model_bytes, kind))
    with pytest.raises(ArtifactError):
        load_model(artifact_store, info)


def test_id_tables_that_cannot_be_read_are_refused(
    artifact_store: ArtifactStore, write_model: Callable[..., ModelInfo], clusters: Any
) -> None:
    info = write_model(1)
    folder = model_folder(1)
    _, files = artifact_store.read_bundle(folder)
    files[IDS_FILE] = npz_bytes(user_ids=np.array(clusters.user_ids))  # no item_ids
    artifact_store.write_bundle(folder, files, {})  # whole, with matching checksums
    with pytest.raises(ArtifactError, match="cannot be read"):
        load_model(artifact_store, info)


@pytest.mark.parametrize("table", ["user_ids", "item_ids"])
def test_id_tables_that_do_not_match_the_factors_are_refused(
    artifact_store: ArtifactStore,
    write_model: Callable[..., ModelInfo],
    clusters: Any,
    table: str,
) -> None:
    ids = {"user_ids": clusters.user_ids, "item_ids": clusters.item_ids}
    info = write_model(1, **{table: ids[table][:-1]})
    with pytest.raises(ArtifactError, match="id tables"):
        load_model(artifact_store, info)


async def test_refresh_loads_the_active_version(
    model_v1: ModelInfo, new_holder: Callable[[], ModelHolder]
) -> None:
    holder = new_holder()
    assert holder.serving_version is None
    await holder.refresh()
    assert holder.active_version == 1
    assert holder.serving_version == 1
    assert holder.current is not None
    assert holder.last_error is None
    assert _sample("recsys_model_version") == 1
    loaded = holder.current
    await holder.refresh()  # nothing new: the very same object keeps serving
    assert holder.current is loaded


async def test_refresh_without_any_version(new_holder: Callable[[], ModelHolder]) -> None:
    holder = new_holder()
    await holder.refresh()
    assert holder.active_version is None
    assert holder.current is None
    assert holder.last_error is None


async def test_a_corrupt_newer_version_keeps_the_old_one_serving(
    holder: ModelHolder,
    registry: ModelRegistry,
    artifact_store: ArtifactStore,
    write_model: Callable[..., ModelInfo],
) -> None:
    serving = holder.current
    info = write_model(2)
    _corrupt(artifact_store, 2)
    await registry.publish(info, reason="test")
    failures = _sample("recsys_model_load_failures_total")
    loads = _sample("recsys_model_load_duration_seconds_count")

    await holder.refresh()

    assert holder.current is serving
    assert holder.serving_version == 1
    assert holder.active_version == 2
    assert holder.last_error is not None
    assert "version 2" in holder.last_error
    assert _sample("recsys_model_load_failures_total") == failures + 1
    assert _sample("recsys_model_load_duration_seconds_count") == loads
    assert _sample("recsys_model_version") == 1
    # Within the backoff the broken version is not read again.
    await holder.refresh()
    assert _sample("recsys_model_load_failures_total") == failures + 1
    assert holder.current is serving


@pytest.mark.parametrize("kind", ["truncated", "no factors"])
async def test_an_unreadable_newer_version_keeps_the_old_one_serving(
    holder: ModelHolder,
    registry: ModelRegistry,
    write_model: Callable[..., ModelInfo],
    als_model_bytes: bytes,
    kind: str,
) -> None:
    serving = holder.current
    await registry.publish(
        write_model(2, model_bytes=_unreadable(als_model_bytes, kind)), reason="test"
    )
    await holder.refresh()  # must not raise: the watcher calls it in its loop
    assert holder.current is serving
    assert holder.active_version == 2
    assert holder.last_error is not None
    assert "version 2" in holder.last_error


@pytest.fixture
async def broken_v2(
    holder: ModelHolder,
    registry: ModelRegistry,
    artifact_store: ArtifactStore,
    write_model: Callable[..., ModelInfo],
) -> ModelHolder:
    """Version 2 published with a corrupt artifact, and the holder refreshed once since."""
    info = write_model(2)
    _corrupt(artifact_store, 2)
    await registry.publish(info, reason="test")
    await holder.refresh()
    return holder


async def test_a_repaired_version_is_loaded_after_the_backoff(
    broken_v2: ModelHolder, write_model: Callable[..., ModelInfo]
) -> None:
    holder = broken_v2
    assert holder.serving_version == 1
    write_model(2)  # the artifact is written again, whole
    await asyncio.sleep(1.1)  # the first retry comes after a second
    await holder.refresh()
    assert holder.serving_version == 2
    assert holder.last_error is None


async def test_rollback_to_an_older_version_is_picked_up(
    holder: ModelHolder, registry: ModelRegistry, write_model: Callable[..., ModelInfo]
) -> None:
    await registry.publish(write_model(2), reason="test")
    await holder.refresh()
    assert holder.serving_version == 2
    assert await registry.activate(1, reason="rollback") == 2
    await holder.refresh()
    assert holder.serving_version == 1
    assert holder.active_version == 1
    assert _sample("recsys_model_version") == 1


async def test_rollback_away_from_a_broken_version_clears_its_error(
    broken_v2: ModelHolder, registry: ModelRegistry
) -> None:
    holder = broken_v2
    assert holder.last_error is not None
    await registry.activate(1, reason="rollback")
    await holder.refresh()
    assert holder.serving_version == holder.active_version == 1
    assert holder.last_error is None


# ── the watcher: notifications, and polling without them ──────────────────────────────────
def _serving(holder: ModelHolder, version: int) -> Callable[[], Awaitable[bool]]:
    async def serving() -> bool:
        return holder.serving_version == version

    return serving


async def test_the_watcher_learns_of_a_new_version_from_the_channel(
    model_v1: ModelInfo,
    redis_client: RedisClient,
    redis_url: str,
    artifact_store: ArtifactStore,
    registry: ModelRegistry,
    write_model: Callable[..., ModelInfo],
) -> None:
    notifications = await connect(redis_url, channels=[keys.MODEL_EVENTS_CHANNEL])
    # Polls a minute apart: only the notification can bring version 2 within the wait.
    holder = ModelHolder(redis_client, artifact_store, poll_seconds=60, notifications=notifications)
    try:
        async with in_background(holder.watch()):
            await eventually(_serving(holder, 1))
            await registry.publish(write_model(2), reason="test")
            await eventually(_serving(holder, 2), within=10)
            # A rollback is announced the same way.
            await registry.activate(1, reason="rollback")
            await eventually(_serving(holder, 1), within=10)
    finally:
        await notifications.aclose()
    assert holder.active_version == 1


async def test_without_notifications_the_watcher_polls(
    model_v1: ModelInfo,
    new_holder: Callable[[], ModelHolder],
    registry: ModelRegistry,
    write_model: Callable[..., ModelInfo],
) -> None:
    holder = new_holder()  # no notifications client; polls every 0.2 s
    assert holder.notifications is None
    async with in_background(holder.watch()):
        await eventually(_serving(holder, 1))
        await registry.publish(write_model(2), reason="test")
        await eventually(_serving(holder, 2), within=10)
    assert holder.active_version == 2
