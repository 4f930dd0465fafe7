"""The model registry against a real Redis: lineage, activation, rollback, notifications."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from recsys_shared import keys
from recsys_shared.errors import Conflict, UnknownModelVersion
from recsys_shared.locks import LockLost, RedisLock
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelStatus


@pytest.fixture
def registry(redis_client: RedisClient) -> ModelRegistry:
    return ModelRegistry(redis_client)


async def _next_message(subscriber: RedisClient) -> str:
    async with asyncio.timeout(5):
        return await subscriber.next_message()


async def test_next_version_strictly_increases(registry: ModelRegistry) -> None:
    versions = [await registry.next_version() for _ in range(5)]

    assert versions == sorted(set(versions))
    assert versions[0] >= 1


async def test_a_recorded_candidate_reads_back_with_its_lineage(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    info = make_model_info(1)

    await registry.record(info)
    stored = await registry.get(1)

    assert stored == info
    assert stored.status is ModelStatus.CANDIDATE
    assert await registry.active_version() is None
    assert await registry.active() is None


async def test_publish_makes_a_version_active(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(1), reason="first model")

    active = await registry.active()

    assert await registry.active_version() == 1
    assert active is not None
    assert active.version == 1
    assert active.status is ModelStatus.ACTIVE
    assert active.status_reason == "first model"
    assert active.activated_at is not None


async def test_publishing_a_newer_version_retires_the_previous_one(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(1), reason="first")
    await registry.publish(make_model_info(2), reason="better")

    old, new = await registry.get(1), await registry.get(2)

    assert await registry.active_version() == 2
    assert (old.status, old.status_reason) == (ModelStatus.RETIRED, "replaced by version 2")
    assert (new.status, new.status_reason) == (ModelStatus.ACTIVE, "better")


async def test_rollback_activates_an_older_version_and_notifies(
    registry: ModelRegistry, subscriber: RedisClient, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(1), reason="first")
    await registry.publish(make_model_info(2), reason="second")
    assert [await _next_message(subscriber), await _next_message(subscriber)] == ["1", "2"]

    replaced = await registry.activate(1, "rollback: v2 regressed")
    message = await _next_message(subscriber)

    assert replaced == 2
    assert message == "1"
    assert await registry.active_version() == 1
    rolled_back, retired = await registry.get(1), await registry.get(2)
    assert rolled_back.status is ModelStatus.ACTIVE
    assert rolled_back.status_reason == "rollback: v2 regressed"
    assert rolled_back.replaced_by is None
    assert retired.status is ModelStatus.RETIRED
    assert retired.status_reason == "replaced by version 1"
    assert retired.replaced_by == 1


async def test_publish_notifies_subscribers(
    registry: ModelRegistry, subscriber: RedisClient, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(7), reason="first")

    assert await _next_message(subscriber) == "7"


async def test_versions_can_be_forgotten_with_their_snapshot_key(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.record(make_model_info(1, snapshot_id="s-1"))
    await registry.record(make_model_info(2, snapshot_id="s-2"))

    await registry.forget(1, "s-1")

    assert [info.version for info in await registry.list()] == [2]
    assert await registry.version_for_snapshot("s-1") is None
    assert await registry.version_for_snapshot("s-2") == 2


async def test_activating_the_active_version_again_keeps_it_active(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(1), reason="first")

    replaced = await registry.activate(1, "again")

    assert replaced == 1
    assert (await registry.get(1)).status is ModelStatus.ACTIVE


async def test_activating_a_candidate_with_no_active_version_returns_none(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.record(make_model_info(3))

    assert await registry.activate(3, "manual") is None
    assert await registry.active_version() == 3


async def test_unknown_version_is_refused(registry: ModelRegistry, make_model_info: Any) -> None:
    await registry.publish(make_model_info(1), reason="first")

    with pytest.raises(UnknownModelVersion):
        await registry.activate(99, "typo")
    with pytest.raises(UnknownModelVersion):
        await registry.get(99)
    assert await registry.active_version() == 1


async def test_a_version_without_artifact_cannot_be_activated(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(1), reason="first")
    await registry.record(make_model_info(2, status=ModelStatus.REJECTED, artifact=False))

    with pytest.raises(Conflict, match="no artifact"):
        await registry.activate(2, "try anyway")

    assert await registry.active_version() == 1
    assert (await registry.get(1)).status is ModelStatus.ACTIVE
    assert (await registry.get(2)).status is ModelStatus.REJECTED


async def test_a_garbage_collected_version_cannot_be_activated(
    registry: ModelRegistry, make_model_info: Any
) -> None:
    await registry.publish(make_model_info(1), reason="first")
    await registry.publish(make_model_info(2), reason="second")

    await registry.drop_artifact(1)

    with pytest.raises(Conflict):
        await registry.activate(1, "rollback")
    assert (await registry.get(1)).artifact_url is None
    assert await registry.active_version() == 2


async def test_version_for_snapshot(registry: ModelRegistry, make_model_info: Any) -> None:
    await registry.record(make_model_info(5, snapshot_id="1714564800000-0"))

    assert await registry.version_for_snapshot("1714564800000-0") == 5
    assert await registry.version_for_snapshot("1714564800000-1") is None


async def test_list_is_newest_first(registry: ModelRegistry, make_model_info: Any) -> None:
    for version in (3, 1, 10, 2):
        await registry.record(make_model_info(version))

    newest = [info.version for info in await registry.list()]
    oldest = [info.version for info in await registry.list(newest_first=False)]

    assert newest == [10, 3, 2, 1]
    assert oldest == [1, 2, 3, 10]


async def test_list_of_an_empty_registry_is_empty(registry: ModelRegistry) -> None:
    assert await registry.list() == []


# ── fenced writes: a training's record checks that the training lock is still its own ─────
async def test_a_fenced_publish_by_the_locks_holder_goes_through(
    registry: ModelRegistry, redis_client: RedisClient, make_model_info: Any
) -> None:
    lock = RedisLock(redis_client, keys.TRAINING_LOCK, ttl_seconds=30)
    assert await lock.acquire()

    await registry.publish(make_model_info(1), reason="first model", fence=lock.token)
    await registry.record(make_model_info(2), fence=lock.token)

    assert await registry.active_version() == 1
    assert await registry.versions() == [2, 1]


@pytest.mark.parametrize("holder", ["another-worker", None], ids=["taken", "expired"])
async def test_a_fenced_write_after_the_lock_was_lost_writes_nothing(
    registry: ModelRegistry, redis_client: RedisClient, make_model_info: Any, holder: str | None
) -> None:
    await registry.publish(make_model_info(1), reason="first model")
    lock = RedisLock(redis_client, keys.TRAINING_LOCK, ttl_seconds=30)
    assert await lock.acquire()
    await redis_client.execute("DEL", keys.TRAINING_LOCK)  # it expired...
    if holder is not None:  # ...and another training may have taken it since
        await redis_client.execute("SET", keys.TRAINING_LOCK, holder)
    info = make_model_info(2)

    with pytest.raises(LockLost):
        await registry.publish(info, reason="passed the gate", fence=lock.token)
    with pytest.raises(LockLost):
        await registry.record(info, fence=lock.token)

    assert await registry.active_version() == 1
    assert await registry.versions() == [1]
    assert await registry.version_for_snapshot(info.snapshot_id) is None
    assert not await redis_client.execute("EXISTS", keys.model(2))
    assert await redis_client.execute("GET", keys.TRAINING_LOCK) == holder
