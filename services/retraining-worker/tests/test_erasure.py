"""Erased users out of the snapshots and model artifacts written before their erasure.

Tombstones are left by the feature-store's own eraser, in the partitions of the erased users
(``EVENT_PARTITIONS=3``); snapshots and models are written as the feature-store and the
training write them; a rewritten model is loaded by the recommender's own loader. Each test
runs on a single Redis and on a 3-master cluster (the partitions' tombstones on other slots
than the registry's).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_store.erasure import Eraser
from recommender.model_store import load_model
from recsys_shared import artifacts, keys
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Algorithm, ModelInfo, ModelStatus
from recsys_shared.testing import DataTier
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.erasure import ErasureRewrite, erase_from_artifacts
from retraining_worker.pruning import ABANDONED_SNAPSHOT_AGE_SECONDS, ORPHAN_MODEL_AGE_SECONDS
from retraining_worker.recipes import TrainingSet, fit
from retraining_worker.recipes.weighting import training_matrix
from retraining_worker.selection import configured_recipe
from retraining_worker.training import Snapshot, _write_artifact

from .conftest import WriteSnapshot

PARTITIONS = keys.Partitions(3)
#: Erased: users of both taste clusters, in two different partitions.
ERASED = ("u3", "u41")
#: The snapshot every model was trained on, and one of the second cluster only.
SNAPSHOT_ID, SECOND_HALF_ID = "1700000000000-0.g0", "1700000000500-0.g1"


def _triples(arrays: dict[str, Any]) -> set[tuple[str, str, float, float]]:
    """Every interaction by ids, whatever the row numbers."""
    return {
        (str(arrays["user_ids"][row]), str(arrays["item_ids"][col]), float(weight), float(time))
        for row, col, weight, time in zip(
            arrays["rows"], arrays["cols"], arrays["weights"], arrays["times"], strict=True
        )
    }


def _second_half(data: Interactions) -> Interactions:
    """Users 30-59 only (renumbered), with every item."""
    keep = data.rows >= 30
    return Interactions(
        user_ids=data.user_ids[30:],
        item_ids=data.item_ids,
        rows=(data.rows[keep] - 30).astype(np.int32),
        cols=data.cols[keep],
        weights=data.weights[keep],
        times=data.times[keep],
    )


@pytest.fixture
async def redis_client(data_tier: DataTier) -> AsyncIterator[RedisClient]:
    """The services' client on the data tier of the test (a single Redis, then a cluster)."""
    client = await connect(data_tier.url)
    yield client
    await client.aclose()


class Written:
    """What the test wrote before the erasure, to compare with what the rewrite left."""

    def __init__(self) -> None:
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.models: dict[int, ModelInfo] = {}
        self.user_factors: dict[int, dict[str, np.ndarray]] = {}
        self.item_factors: dict[int, np.ndarray] = {}


@pytest.fixture
async def written(
    redis_client: RedisClient,
    clusters: Interactions,
    settings: Settings,
    write_snapshot: WriteSnapshot,
) -> Written:
    """Two snapshots, an ALS version (active), a BPR version and a rejected one."""
    store = artifacts.ArtifactStore(settings.artifact_url)
    registry = ModelRegistry(redis_client)
    before = Written()
    for snapshot_id, data in ((SNAPSHOT_ID, clusters), (SECOND_HALF_ID, _second_half(clusters))):
        write_snapshot(store, snapshot_id, data)
        before.snapshots[snapshot_id] = asdict(data)
    algorithms: tuple[Algorithm, ...] = ("bpr", "als")
    for version, algorithm in enumerate(algorithms, start=1):
        recipe = configured_recipe(settings, algorithm)
        model = fit(recipe, TrainingSet(training_matrix(clusters, recipe), None, 1, 42))
        info = ModelInfo(
            version=version,
            status=ModelStatus.CANDIDATE,
            algorithm=algorithm,
            created_at=datetime.now(UTC),
            snapshot_id=SNAPSHOT_ID,
            artifact_url=store.url(artifacts.model_folder(version)),
        )
        manifest = _write_artifact(store, info, model, Snapshot(clusters, None, None))
        info.checksum = manifest["files"][artifacts.MODEL_FILE]["sha256"]
        await registry.publish(info, reason="test")
        before.models[version] = info
        factors = np.asarray(model.model.user_factors)  # type: ignore[attr-defined]
        before.user_factors[version] = {
            str(user): factors[row] for row, user in enumerate(clusters.user_ids)
        }
        before.item_factors[version] = np.asarray(model.model.item_factors)  # type: ignore[attr-defined]
    await registry.record(
        ModelInfo(
            version=3,
            status=ModelStatus.REJECTED,
            algorithm="als",
            created_at=datetime.now(UTC),
            snapshot_id=SNAPSHOT_ID,
        )
    )
    return before


async def _erase(redis_client: RedisClient, *users: str) -> None:
    eraser = Eraser(redis_client, PARTITIONS, ephemeral=redis_client)
    for user in users:
        await eraser.erase(user)


async def test_erased_users_leave_every_snapshot_and_model(
    redis_client: RedisClient, settings: Settings, written: Written, clusters: Interactions
) -> None:
    store = artifacts.ArtifactStore(settings.artifact_url)
    registry = ModelRegistry(redis_client)
    await _erase(redis_client, *ERASED)
    assert len({PARTITIONS.of(user).number for user in ERASED}) == 2

    done = await erase_from_artifacts(redis_client, store, PARTITIONS)

    assert done == ErasureRewrite(snapshots=2, models=2)
    # Snapshots: the same interactions, without the erased users'; the manifest says so.
    for snapshot_id, arrays in written.snapshots.items():
        # read_bundle verifies the rewritten files' checksums.
        manifest, files = store.read_bundle(artifacts.snapshot_folder(snapshot_id))
        after = artifacts.load_npz(files[artifacts.SNAPSHOT_FILE])
        expected = {triple for triple in _triples(arrays) if triple[0] not in ERASED}
        assert _triples(after) == expected
        assert not set(ERASED) & set(after["user_ids"].tolist())
        assert after["rows"].max() < len(after["user_ids"])
        assert manifest["users"] == len(after["user_ids"])
        assert manifest["interactions"] == len(expected)
        assert manifest["snapshot_id"] == snapshot_id
    # Models: the erased users' rows gone, every other row and the items as they were; the
    # registry's checksum is the new file's; the recommender loads it and knows them no more.
    for version, before in written.models.items():
        manifest, files = store.read_bundle(artifacts.model_folder(version))
        info = await registry.get(version)
        assert info.checksum == manifest["files"][artifacts.MODEL_FILE]["sha256"] != before.checksum
        loaded = load_model(store, info)
        assert loaded.version == version
        assert len(loaded.users) == len(written.user_factors[version]) - len(ERASED)
        for user in ERASED:
            assert loaded.users.get(user) is None
        for user, factors in written.user_factors[version].items():
            row = loaded.users.get(user)
            if user not in ERASED:
                assert row is not None
                np.testing.assert_array_equal(loaded.model.user_factors[row], factors)
        np.testing.assert_array_equal(loaded.model.item_factors, written.item_factors[version])
        item_ids = artifacts.load_npz(files[artifacts.IDS_FILE])["item_ids"].tolist()
        assert item_ids == clusters.item_ids.tolist()
        assert [loaded.items.name(row) for row in range(len(loaded.items))] == item_ids
    assert (await registry.get(3)).checksum is None  # no artifact: nothing to rewrite


async def test_a_second_pass_and_a_pass_without_tombstones_rewrite_nothing(
    redis_client: RedisClient, settings: Settings, written: Written
) -> None:
    store = artifacts.ArtifactStore(settings.artifact_url)

    assert await erase_from_artifacts(redis_client, store, PARTITIONS) == ErasureRewrite(0, 0)
    untouched = store.read_bytes(f"{artifacts.model_folder(2)}/manifest.json")
    assert (
        json.loads(untouched)["files"][artifacts.MODEL_FILE]["sha256"] == written.models[2].checksum
    )

    await _erase(redis_client, "u7")
    assert await erase_from_artifacts(redis_client, store, PARTITIONS) == ErasureRewrite(1, 2)
    assert await erase_from_artifacts(redis_client, store, PARTITIONS) == ErasureRewrite(0, 0)


async def test_a_user_in_no_artifact_rewrites_nothing(
    redis_client: RedisClient, settings: Settings, written: Written
) -> None:
    store = artifacts.ArtifactStore(settings.artifact_url)
    await _erase(redis_client, "never-seen")

    assert await erase_from_artifacts(redis_client, store, PARTITIONS) == ErasureRewrite(0, 0)
    registry = ModelRegistry(redis_client)
    assert (await registry.get(1)).checksum == written.models[1].checksum


def _backdate(store: artifacts.ArtifactStore, folder: str, seconds: float) -> None:
    """Make every file of ``folder`` (and the folder) last changed ``seconds`` ago."""
    moment = time.time() - seconds
    root = Path(store.root) / folder
    for path in [root, *root.rglob("*")]:
        os.utime(path, (moment, moment))


async def test_a_snapshot_without_a_manifest_does_not_stop_the_erasure(
    redis_client: RedisClient,
    settings: Settings,
    written: Written,
    clusters: Interactions,
    write_snapshot: WriteSnapshot,
) -> None:
    store = artifacts.ArtifactStore(settings.artifact_url)
    holding_everyone = artifacts.npz_bytes(**asdict(clusters))
    # An export in progress: its data written, its manifest not yet.
    in_progress = "1700000000900-0.g2"
    store.write_bytes(f"snapshots/{in_progress}/{artifacts.SNAPSHOT_FILE}", holding_everyone)
    # One that crashed before its manifest, long ago.
    crashed = "1700000000100-0.g0"
    store.write_bytes(f"snapshots/{crashed}/{artifacts.SNAPSHOT_FILE}", holding_everyone)
    _backdate(store, artifacts.snapshot_folder(crashed), ABANDONED_SNAPSHOT_AGE_SECONDS + 60)
    await _erase(redis_client, *ERASED)

    done = await erase_from_artifacts(redis_client, store, PARTITIONS)

    assert done == ErasureRewrite(snapshots=2, models=2, removed=1)
    assert store.list_dirs("snapshots") == sorted([SNAPSHOT_ID, SECOND_HALF_ID, in_progress])
    # Once the export has finished, the next pass takes the users out of it too.
    write_snapshot(store, in_progress, clusters)
    assert await erase_from_artifacts(redis_client, store, PARTITIONS) == ErasureRewrite(1, 0)
    _, files = store.read_bundle(artifacts.snapshot_folder(in_progress))
    users = artifacts.load_npz(files[artifacts.SNAPSHOT_FILE])["user_ids"].tolist()
    assert not set(ERASED) & set(users)


async def test_an_unpublished_model_holding_erased_users_is_deleted(
    redis_client: RedisClient, settings: Settings, written: Written
) -> None:
    store = artifacts.ArtifactStore(settings.artifact_url)
    manifest, files = store.read_bundle(artifacts.model_folder(2))  # every user in it
    metadata = {key: value for key, value in manifest.items() if key != "files"}
    # 4: its training died before publishing; 5: the training in progress (holding the lock,
    # the last number the counter gave), which may still publish it.
    for version in (4, 5):
        store.write_bundle(artifacts.model_folder(version), files, metadata)
        _backdate(store, artifacts.model_folder(version), ORPHAN_MODEL_AGE_SECONDS + 60)
    await redis_client.execute("SET", keys.MODEL_VERSION_SEQUENCE, 5)
    await redis_client.execute("SET", keys.TRAINING_LOCK, "a training")
    await _erase(redis_client, *ERASED)

    done = await erase_from_artifacts(redis_client, store, PARTITIONS)

    assert done == ErasureRewrite(snapshots=2, models=2, removed=1)
    assert not store.exists(artifacts.model_folder(4))
    # Untouched: its training publishes the checksum it wrote (and a later pass rewrites it).
    assert store.read_bundle(artifacts.model_folder(5))[0] == manifest
    # That training ended without publishing: the next pass deletes its folder.
    await redis_client.execute("DEL", keys.TRAINING_LOCK)
    assert await erase_from_artifacts(redis_client, store, PARTITIONS) == ErasureRewrite(0, 0, 1)
    registered = [artifacts.model_folder(version) for version in (1, 2)]
    assert [f"models/{name}" for name in store.list_dirs("models")] == registered
