"""The training lock, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from recsys_shared import keys
from retraining_worker.training import TrainingLocked, training_lock


async def test_second_acquisition_while_held_is_refused(redis_client: aioredis.Redis) -> None:
    async with training_lock(redis_client, ttl_seconds=30):
        with pytest.raises(TrainingLocked):
            async with training_lock(redis_client, ttl_seconds=30):
                pytest.fail("a second holder entered the lock")
        # The failed attempt did not take the lock away from its holder.
        assert await redis_client.exists(keys.TRAINING_LOCK) == 1

    assert await redis_client.exists(keys.TRAINING_LOCK) == 0
    async with training_lock(redis_client, ttl_seconds=30):
        assert await redis_client.exists(keys.TRAINING_LOCK) == 1


async def test_lock_key_has_a_ttl(redis_client: aioredis.Redis) -> None:
    async with training_lock(redis_client, ttl_seconds=30):
        ttl = await redis_client.ttl(keys.TRAINING_LOCK)
        assert 0 < ttl <= 30


async def test_lock_is_released_when_the_body_fails(redis_client: aioredis.Redis) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with training_lock(redis_client, ttl_seconds=30):
            raise RuntimeError("boom")

    assert await redis_client.exists(keys.TRAINING_LOCK) == 0


async def test_lock_owned_by_another_token_is_not_deleted(redis_client: aioredis.Redis) -> None:
    async with training_lock(redis_client, ttl_seconds=30):
        # As if our lock had expired and another worker had taken it.
        await redis_client.set(keys.TRAINING_LOCK, "another-worker", ex=30)

    assert await redis_client.get(keys.TRAINING_LOCK) == "another-worker"
    with pytest.raises(TrainingLocked):
        async with training_lock(redis_client, ttl_seconds=30):
            pytest.fail("entered a lock another worker holds")


async def test_lock_is_renewed_while_held(redis_client: aioredis.Redis) -> None:
    async with training_lock(redis_client, ttl_seconds=1):
        # Longer than the TTL: without renewal the key would have expired.
        await asyncio.sleep(1.6)
        assert await redis_client.exists(keys.TRAINING_LOCK) == 1
        assert 0 < await redis_client.pttl(keys.TRAINING_LOCK) <= 1000

    assert await redis_client.exists(keys.TRAINING_LOCK) == 0
