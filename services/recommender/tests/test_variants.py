"""Experiment versions beside the active one: loaded within the memory bound, verified,
dropped when the experiment ends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from recommender.model_store import ModelHolder
from recommender.variants import VariantModels, resident_bytes
from recsys_shared import keys
from recsys_shared.artifacts import IDS_FILE, ArtifactStore, model_folder
from recsys_shared.errors import ModelUnavailable
from recsys_shared.experiments import decision
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ExperimentIn, ModelInfo

from .conftest import WriteModel


@dataclass(frozen=True)
class TwoVersions:
    active: int
    other: int


@pytest.fixture
async def two_versions(
    model_v1: ModelInfo, write_model: WriteModel, registry: ModelRegistry
) -> TwoVersions:
    """Version 1 active, version 2 recorded beside it (e.g. rejected by the gate)."""
    await registry.record(write_model(2))
    return TwoVersions(active=model_v1.version, other=2)


async def _variants(
    redis_client: RedisClient, artifact_store: ArtifactStore, limit: int
) -> VariantModels:
    holder = ModelHolder(redis_client, artifact_store, poll_seconds=1)
    await holder.refresh()
    return VariantModels(
        holder,
        ExperimentStore(redis_client, keys.Partitions(1)),
        memory_limit_bytes=limit,
        poll_seconds=1,
    )


async def test_a_variant_is_loaded_once_and_counted_in_memory(
    redis_client: RedisClient, artifact_store: ArtifactStore, two_versions: TwoVersions
) -> None:
    variants = await _variants(redis_client, artifact_store, 1 << 30)
    active = variants.holder.current
    assert active is not None
    other = await variants.get(two_versions.other)
    assert other.version == two_versions.other
    assert await variants.get(two_versions.other) is other  # held, not loaded again
    assert await variants.get(active.version) is active  # the active one is not loaded twice
    assert variants.memory_bytes() == resident_bytes(active) + resident_bytes(other)


async def test_a_version_over_the_memory_bound_is_refused(
    redis_client: RedisClient, artifact_store: ArtifactStore, two_versions: TwoVersions
) -> None:
    variants = await _variants(redis_client, artifact_store, 1024)
    with pytest.raises(ModelUnavailable, match="MODEL_MEMORY_LIMIT_MB"):
        await variants.get(two_versions.other)
    assert variants.held == {}


def _refusals() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "recsys_variant_load_refusals"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_a_refusal_stands_for_a_poll_interval_instead_of_a_load_per_request(
    redis_client: RedisClient,
    artifact_store: ArtifactStore,
    two_versions: TwoVersions,
) -> None:
    variants = await _variants(redis_client, artifact_store, 1024)
    variants.poll_seconds = 0.2
    before = _refusals()
    for _ in range(20):  # the requests of the variant's users, one after another
        with pytest.raises(ModelUnavailable, match="MODEL_MEMORY_LIMIT_MB"):
            await variants.get(two_versions.other)
    assert _refusals() == before + 1  # tried once

    variants.memory_limit_bytes = 1 << 30  # memory freed: after the interval it loads
    with pytest.raises(ModelUnavailable):
        await variants.get(two_versions.other)
    await asyncio.sleep(variants.poll_seconds)
    assert (await variants.get(two_versions.other)).version == two_versions.other


async def test_a_version_whose_artifact_fails_its_checksum_is_refused(
    redis_client: RedisClient, artifact_store: ArtifactStore, two_versions: TwoVersions
) -> None:
    artifact_store.write_bytes(f"{model_folder(two_versions.other)}/{IDS_FILE}", b"tampered")
    variants = await _variants(redis_client, artifact_store, 1 << 30)
    with pytest.raises(ModelUnavailable, match="checksum"):
        await variants.get(two_versions.other)
    with pytest.raises(ModelUnavailable, match="does not exist"):
        await variants.get(999)


async def test_the_running_experiments_versions_are_held_and_dropped_after(
    redis_client: RedisClient, artifact_store: ArtifactStore, two_versions: TwoVersions
) -> None:
    variants = await _variants(redis_client, artifact_store, 1 << 30)
    store = variants.experiments
    request = ExperimentIn.model_validate(
        {
            "name": "t",
            "mode": "canary",
            "variants": [
                {"model_version": two_versions.active},
                {"model_version": two_versions.other},
            ],
        }
    )

    async def prepare(version: int) -> None:
        await variants.prepare(version)

    created = await store.create(request, ModelRegistry(redis_client), prepare)
    await variants.refresh()
    assert set(variants.held) == {two_versions.active, two_versions.other}

    await store.save_state(created.id, decision.stop(created, datetime.now(UTC), "done").state)
    await variants.refresh()
    assert variants.held == {}
