"""Pruning: what the registry and the artifact store keep is enough to roll back, no more."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from recsys_shared import keys
from recsys_shared.artifacts import ArtifactStore, model_folder
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ExperimentIn, ModelStatus
from recsys_shared.testing import model_info
from retraining_worker.config import Settings
from retraining_worker.pruning import (
    ABANDONED_SNAPSHOT_AGE_SECONDS,
    ORPHAN_MODEL_AGE_SECONDS,
    prune,
)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path}")


@pytest.fixture
def registry(redis_client: RedisClient) -> ModelRegistry:
    return ModelRegistry(redis_client)


def _limits(**keep: int) -> Settings:
    """The worker's settings with these retention limits (``keep_*``)."""
    return Settings(redis_url="redis://unused", **keep)  # type: ignore[arg-type]


async def _versions(
    registry: ModelRegistry, store: ArtifactStore, count: int, *, rejected: tuple[int, ...] = ()
) -> None:
    """Versions 1..count recorded; each has an artifact unless it was rejected."""
    for version in range(1, count + 1):
        has_artifact = version not in rejected
        if has_artifact:
            store.write_bundle(model_folder(version), {"model.npz": b"x"}, {"version": version})
        await registry.record(
            model_info(
                version,
                ModelStatus.CANDIDATE if has_artifact else ModelStatus.REJECTED,
                snapshot_id=f"{version}-0.g0",
                artifact_url=store.url(model_folder(version)) if has_artifact else None,
            )
        )


def _artifacts(store: ArtifactStore, count: int) -> set[int]:
    return {v for v in range(1, count + 1) if store.exists(f"{model_folder(v)}/manifest.json")}


async def _with_artifact(registry: ModelRegistry) -> set[int]:
    return {info.version for info in await registry.list() if info.artifact_url}


async def test_pruning_keeps_recent_artifacts_the_active_and_its_rollback_target(
    registry: ModelRegistry, store: ArtifactStore
) -> None:
    settings = _limits(keep_model_versions=2, keep_snapshots=1)
    await _versions(registry, store, 6)
    await registry.activate(2, "old favourite")
    await registry.activate(1, "rolled back")  # 1 is active, 2 the one it replaced
    for name in ("1-0.g0", "5-0.g0", "10-0.g0"):
        store.write_bytes(f"snapshots/{name}/manifest.json", b"{}")

    await prune(registry, store, settings)

    assert await _with_artifact(registry) == {1, 2, 5, 6}
    assert _artifacts(store, 6) == {1, 2, 5, 6}
    # By stream id, not by name; and the active version's (1) whatever its age.
    assert store.list_dirs("snapshots") == ["1-0.g0", "10-0.g0"]
    assert len(await registry.list()) == 6  # lineage stays listed


async def test_records_beyond_the_limit_are_forgotten_but_never_the_rollback_pair(
    registry: ModelRegistry, store: ArtifactStore, inspector: redis.Redis
) -> None:
    settings = _limits(
        keep_model_versions=2,
        keep_model_records=3,
        keep_snapshots=2,
    )
    await _versions(registry, store, 8, rejected=(7,))
    await registry.activate(2, "old favourite")
    await registry.activate(1, "rolled back")
    for name in ("1-0.g0", "5-0.g0", "10-0.g0", "9-1.g2"):
        store.write_bytes(f"snapshots/{name}/manifest.json", b"{}")

    await prune(registry, store, settings)

    # Artifacts: the two newest that have one (8, 6; 7 was rejected), the active, its target.
    assert await _with_artifact(registry) == {1, 2, 6, 8}
    assert _artifacts(store, 8) == {1, 2, 6, 8}
    # Records: the three newest (the rejected one too), the active and its target.
    assert await registry.versions() == [8, 7, 6, 2, 1]
    for forgotten in (3, 4, 5):
        assert not inspector.exists(keys.model(forgotten))
        assert not inspector.exists(keys.model_for_snapshot(f"{forgotten}-0.g0"))
    assert inspector.get(keys.model_for_snapshot("8-0.g0")) == "8"
    assert await registry.active_version() == 1
    assert store.list_dirs("snapshots") == ["1-0.g0", "10-0.g0", "9-1.g2"]  # 1: the active's

    # Once pruned, pruning again removes nothing more.
    await prune(registry, store, settings)
    assert await registry.versions() == [8, 7, 6, 2, 1]
    assert _artifacts(store, 8) == {1, 2, 6, 8}


async def test_a_reactivated_version_keeps_the_one_it_replaced_last(
    registry: ModelRegistry, store: ArtifactStore
) -> None:
    settings = _limits(keep_model_versions=2)
    await _versions(registry, store, 4)  # 4: a newer candidate, never activated
    # 3 replaced 2, was rolled back to 1, then activated again: a rollback now goes to 1
    # (2 still names 3 as its successor, from the first time).
    for version in (1, 2, 3, 1, 3):
        await registry.activate(version, "test")

    await prune(registry, store, settings)

    assert _artifacts(store, 4) == {1, 3, 4}
    assert await registry.activate(1, "the rollback target can still be activated") == 3


async def test_a_running_experiments_versions_keep_their_artifacts(
    redis_client: RedisClient, registry: ModelRegistry, store: ArtifactStore
) -> None:
    settings = _limits(keep_model_versions=2, keep_snapshots=1)
    await _versions(registry, store, 5)
    await registry.activate(5, "newest")
    experiments = ExperimentStore(redis_client, keys.Partitions(1))
    canary = ExperimentIn.model_validate(
        {"name": "old", "mode": "canary", "variants": [{"model_version": 5}, {"model_version": 2}]}
    )

    async def servable(_: int) -> None:
        return None

    await experiments.create(canary, registry, servable)

    await prune(registry, store, settings)

    assert _artifacts(store, 5) == {2, 4, 5}  # 2 is the canary, though not among the newest


def _backdate(store: ArtifactStore, folder: str, seconds: float) -> None:
    """Make every file of ``folder`` (and the folder) last changed ``seconds`` ago."""
    moment = time.time() - seconds
    root = Path(store.root) / folder
    for path in [root, *root.rglob("*")]:
        os.utime(path, (moment, moment))


def _model_files(store: ArtifactStore, version: int, *, manifest: bool = True) -> None:
    """A model folder as a training writes it; without ``manifest``, killed mid-write."""
    folder = model_folder(version)
    if manifest:
        store.write_bundle(folder, {"model.npz": b"x"}, {"version": version})
    else:
        store.write_bytes(f"{folder}/model.npz", b"x")


def _model_dirs(store: ArtifactStore) -> set[str]:
    return set(store.list_dirs("models"))


async def test_unpublished_model_folders_go_once_no_training_can_be_writing_them(
    registry: ModelRegistry, store: ArtifactStore, inspector: redis.Redis
) -> None:
    settings = _limits(keep_model_versions=10)
    await _versions(registry, store, 2)  # 1 and 2: published, whatever their age
    _model_files(store, 3)  # a training that died before publishing
    _model_files(store, 4, manifest=False)  # one killed while writing its files
    _model_files(store, 5)  # died too, but only just: the age rule keeps it a while
    _model_files(store, 6)  # the version the counter gave last
    _model_files(store, 7)  # above the counter (taken after pruning read it)
    store.write_bytes("models/v3/notes.txt", b"not a name model_folder makes: not ours")
    for folder in ("models/v3", *(model_folder(v) for v in (1, 2, 3, 4, 6, 7))):
        _backdate(store, folder, ORPHAN_MODEL_AGE_SECONDS + 60)
    inspector.set(keys.MODEL_VERSION_SEQUENCE, 6)
    inspector.set(keys.TRAINING_LOCK, "a training holds the lock")

    await prune(registry, store, settings)

    # 6 may be the training in progress (it holds the lock and took the last number).
    kept = {model_folder(v).removeprefix("models/") for v in (1, 2, 5, 6, 7)}
    assert _model_dirs(store) == kept | {"v3"}

    inspector.delete(keys.TRAINING_LOCK)  # that training is over: 6 was never published
    await prune(registry, store, settings)
    assert _model_dirs(store) == kept - {model_folder(6).removeprefix("models/")} | {"v3"}

    _backdate(store, model_folder(5), ORPHAN_MODEL_AGE_SECONDS + 60)
    await prune(registry, store, settings)
    assert _artifacts(store, 7) == {1, 2, 7}
    assert await _with_artifact(registry) == {1, 2}


def _snapshot(store: ArtifactStore, name: str, *, manifest: bool = True, age: float = 0) -> None:
    folder = f"snapshots/{name}"
    store.write_bytes(f"{folder}/interactions.npz", b"x")
    if manifest:
        store.write_bytes(f"{folder}/manifest.json", b"{}")
    _backdate(store, folder, age)


@pytest.mark.parametrize(
    ("names", "kept"),
    [
        # The same stream position, three data generations (erasures in between).
        (("5-7.g9", "5-7.g10", "5-7.g11"), ["5-7.g11"]),
        (("5-7.g9", "5-7.g10", "5-7.g11", "5-7.g100"), ["5-7.g100", "5-7.g11"]),
        # The generation only goes up; the checksum says nothing of age.
        (("6-9.g1", "6-3.g2"), ["6-3.g2"]),
        # The stream position first; ids from before generations existed sort as g0.
        (("10-0", "9-5.g3", "9-5"), ["10-0", "9-5.g3"]),
    ],
)
async def test_snapshots_sort_by_every_part_as_numbers(
    registry: ModelRegistry, store: ArtifactStore, names: tuple[str, ...], kept: list[str]
) -> None:
    for name in names:
        _snapshot(store, name)

    await prune(registry, store, _limits(keep_snapshots=len(kept)))

    assert store.list_dirs("snapshots") == sorted(kept)


async def test_a_snapshot_without_a_manifest_stays_while_it_may_be_written(
    registry: ModelRegistry, store: ArtifactStore
) -> None:
    _snapshot(store, "1-0.g0")
    _snapshot(store, "2-0.g0")
    _snapshot(store, "3-0.g0", manifest=False)  # the export in progress: not counted either
    abandoned = ABANDONED_SNAPSHOT_AGE_SECONDS + 60
    _snapshot(store, "0-5.g0", manifest=False, age=abandoned)  # crashed long ago
    _snapshot(store, "4-0.g1", manifest=False, age=abandoned)  # crashed, though the newest
    store.write_bytes("snapshots/scratch/notes.txt", b"not a snapshot id: not ours")
    _backdate(store, "snapshots/scratch", abandoned)

    await prune(registry, store, _limits(keep_snapshots=2))

    assert store.list_dirs("snapshots") == ["1-0.g0", "2-0.g0", "3-0.g0", "scratch"]


async def test_the_active_versions_snapshot_stays_beyond_the_newest(
    registry: ModelRegistry, store: ArtifactStore
) -> None:
    # Version 1 (snapshot 1-0.g0) serves; three newer snapshots were refused or rejected.
    await _versions(registry, store, 1)
    await registry.activate(1, "passed the gate")
    for name in ("1-0.g0", "2-0.g0", "3-0.g0", "4-0.g0"):
        _snapshot(store, name)

    await prune(registry, store, _limits(keep_snapshots=2))

    # The drift check reads what the active version learnt from.
    assert store.list_dirs("snapshots") == ["1-0.g0", "3-0.g0", "4-0.g0"]
