"""The rate limit: counted in process, shared by the replicas through the ephemeral Redis when
there is one, and never an error because that Redis is down or full.

The limit is a window of one wall-clock second, so each test that counts up to it starts in
the first half of a second (:func:`_early_in_a_second`): its few checks, done in microseconds
(or a few requests, in milliseconds), then fall in one window. Nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.rate_limit import RateLimiter
from recsys_shared import keys
from recsys_shared.errors import RateLimited, StoreOutOfMemory, StoreUnavailable
from recsys_shared.processes import RedisServer, free_port
from recsys_shared.redis import RedisClient, connect
from recsys_shared.testing.waiting import eventually

KEY = "k1"  # what auth hands the limiter: a short digest of the API key


def _margin() -> float:
    return 0.5 - time.time() % 1


async def _early_in_a_second() -> int:
    """Wait, if need be, for the next second to begin; the second we are in."""
    if _margin() < 0:
        await asyncio.sleep(1 - time.time() % 1 + 0.01)
    return int(time.time())


def _wait_early_in_a_second() -> int:
    if _margin() < 0:
        time.sleep(1 - time.time() % 1 + 0.01)
    return int(time.time())


async def _allowed(limiter: RateLimiter, key_id: str = KEY) -> bool:
    try:
        await limiter.check(key_id)
    except RateLimited as refused:
        retry_after = refused.retry_after
    else:
        return True
    assert retry_after == 1
    return False


async def test_a_replica_alone_counts_in_process() -> None:
    limiter = RateLimiter(None, per_second=3)
    await _early_in_a_second()

    outcomes = [await _allowed(limiter) for _ in range(5)]

    assert outcomes == [True, True, True, False, False]
    assert await _allowed(limiter, "another key")  # each key has its own budget
    await limiter.sync()  # nothing to share with: no error either
    assert not await _allowed(limiter)


async def test_zero_turns_the_limit_off() -> None:
    limiter = RateLimiter(None, per_second=0)

    assert all([await _allowed(limiter) for _ in range(1000)])


async def test_replicas_learn_each_others_counts_when_they_sync(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    a = RateLimiter(redis_client, per_second=5)
    b = RateLimiter(redis_client, per_second=5)
    second = await _early_in_a_second()

    assert [await _allowed(a) for _ in range(3)] == [True, True, True]
    await a.sync()
    counter = keys.rate_limit(KEY, second)
    assert inspector.get(counter) == "3"
    assert 0 < inspector.ttl(counter) <= 2  # a counter outlives its second only briefly

    assert await _allowed(b)  # b has not synced yet: it knows only its own request
    await b.sync()  # now it knows a's 3
    assert inspector.get(counter) == "4"
    assert [await _allowed(b), await _allowed(b)] == [True, False]  # 2 + 3, then 3 + 3 > 5

    # a learns of b's requests (the refused one counts too) at its next sync.
    assert await _allowed(a)
    await a.sync()
    assert not await _allowed(a)
    assert int(time.time()) == second, "the test outlasted its window; rerun it"


async def test_the_counts_are_shared_in_the_background(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    limiter = RateLimiter(redis_client, per_second=100, sync_seconds=0.01)
    limiter.start()
    try:
        second = await _early_in_a_second()
        for _ in range(2):
            await limiter.check(KEY)

        # Written to this second's counter even if the sync runs in the next one.
        await eventually(lambda: asyncio.to_thread(inspector.get, keys.rate_limit(KEY, second)))
        assert inspector.get(keys.rate_limit(KEY, second)) == "2"
    finally:
        await limiter.stop()


@pytest.fixture
async def unreachable() -> AsyncIterator[tuple[RedisClient, int]]:
    """A client of a Redis that is not running (yet), and its port."""
    port = free_port()
    client = await connect(f"redis://127.0.0.1:{port}/0", command_timeout=0.2)
    yield client, port
    await client.aclose()


async def test_a_shared_redis_that_is_down_leaves_the_limit_local_and_the_sync_alive(
    unreachable: tuple[RedisClient, int], tmp_path: Path
) -> None:
    client, port = unreachable
    limiter = RateLimiter(client, per_second=3, sync_seconds=0.01)
    limiter.start()
    server = RedisServer(tmp_path / "late", port=port, durable=False)
    try:
        await _early_in_a_second()
        assert [await _allowed(limiter) for _ in range(4)] == [True, True, True, False]
        with pytest.raises(StoreUnavailable):
            await limiter.sync()  # what the background loop meets, and swallows

        # Once the Redis answers, the same loop shares the counts again.
        server.start()
        with redis.Redis(port=port, decode_responses=True) as late:

            async def shared() -> bool:
                await _allowed(limiter, "later")
                found = await asyncio.to_thread(late.keys, keys.RATE_LIMIT_PREFIX + "later:*")
                return bool(found)

            await eventually(shared, within=15)
    finally:
        await limiter.stop()
        server.stop()


async def test_a_full_shared_redis_leaves_the_limit_local(
    ephemeral_server: RedisServer,
) -> None:
    with redis.Redis.from_url(ephemeral_server.url) as admin:
        admin.config_set("maxmemory", 1)  # every write is refused: OOM
    client = await connect(ephemeral_server.url, command_timeout=1)
    limiter = RateLimiter(client, per_second=3)
    try:
        await _early_in_a_second()
        assert await _allowed(limiter)
        with pytest.raises(StoreOutOfMemory):
            await limiter.sync()
        assert [await _allowed(limiter) for _ in range(3)] == [True, True, False]
    finally:
        await client.aclose()


@pytest.mark.parametrize("shared", ["down", "full"])
def test_no_request_fails_because_the_ephemeral_redis_cannot_count(
    make_gateway: Any, ephemeral_server: RedisServer, client_headers: dict[str, str], shared: str
) -> None:
    if shared == "down":
        url = f"redis://127.0.0.1:{free_port()}/0"
    else:
        with redis.Redis.from_url(ephemeral_server.url) as admin:
            admin.config_set("maxmemory", 1)
        url = ephemeral_server.url
    gateway = make_gateway(
        ephemeral_redis_url=url,
        rate_limit_per_second=3,
        rate_limit_sync_seconds=0.01,
        redis_timeout_seconds=0.2,
    )
    _wait_early_in_a_second()

    statuses = [
        gateway.client.get("/v1/items/popular", headers=client_headers).status_code
        for _ in range(5)
    ]

    assert statuses == [200, 200, 200, 429, 429]
