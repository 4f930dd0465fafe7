"""Fixtures for the feature-store tests: events, a real stream with its consumer group, settings.

Everything runs against the session's real redis-server (``redis_client``/``redis_url`` from
``recsys_shared.testing``), because the applier and the catalogue are Lua scripts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from feature_store.applier import EventApplier
from feature_store.config import Settings
from recsys_shared import keys
from recsys_shared.schemas import EventType, StoredEvent

#: A sane event time: a day ago, well inside what the snapshot quality check accepts.
BASE_TS = float(int(time.time()) - 86_400)


@pytest.fixture
def base_ts() -> float:
    return BASE_TS


@pytest.fixture
def make_event() -> Callable[..., StoredEvent]:
    """``make_event(user, item, type="view", value=None, ts=None, event_id=None)``."""
    counter = itertools.count(1)

    def make(
        user_id: str,
        item_id: str,
        type: EventType | str = EventType.VIEW,
        *,
        value: float | None = None,
        ts: float | None = None,
        event_id: str | None = None,
    ) -> StoredEvent:
        number = next(counter)
        return StoredEvent(
            event_id=event_id or f"ev-{number}",
            user_id=user_id,
            item_id=item_id,
            type=EventType(type),
            value=value,
            ts=BASE_TS + number if ts is None else ts,
            received_at=time.time(),
        )

    return make


class Stream:
    """The real events stream and the feature-store's consumer group, as the gateway fills it."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    async def create_group(self) -> None:
        await self.redis.xgroup_create(keys.EVENTS_STREAM, keys.EVENTS_GROUP, id="0", mkstream=True)

    async def add(self, event: StoredEvent) -> str:
        """XADD one event exactly as the gateway's ingest script does."""
        return await self.add_raw({"e": event.model_dump_json(exclude_none=True)})

    async def add_raw(self, fields: dict[str, str]) -> str:
        stream_id: str = await self.redis.xadd(keys.EVENTS_STREAM, fields)  # type: ignore[arg-type]
        return stream_id

    async def read(self, consumer: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """XREADGROUP new entries as ``consumer``: they become pending for it."""
        response = await self.redis.xreadgroup(
            keys.EVENTS_GROUP, consumer, {keys.EVENTS_STREAM: ">"}, count=count
        )
        return response[0][1] if response else []

    async def deliver(
        self, events: list[StoredEvent], consumer: str = "reader"
    ) -> list[tuple[str, StoredEvent]]:
        """XADD the events and read them through the group, so they are pending, as the
        consumer hands them to the applier."""
        for event in events:
            await self.add(event)
        entries = await self.read(consumer)
        assert len(entries) == len(events)
        return [(stream_id, StoredEvent.model_validate_json(f["e"])) for stream_id, f in entries]

    async def pending(self) -> int:
        summary = await self.redis.xpending(keys.EVENTS_STREAM, keys.EVENTS_GROUP)
        return int(summary["pending"])

    async def pending_ids(self, consumer: str | None = None) -> list[str]:
        rows = await self.redis.xpending_range(
            keys.EVENTS_STREAM,
            keys.EVENTS_GROUP,
            min="-",
            max="+",
            count=10_000,
            consumername=consumer,
        )
        return [row["message_id"] for row in rows]

    async def dead_letters(self) -> list[dict[str, str]]:
        return [fields for _, fields in await self.redis.xrange(keys.DEAD_LETTER_STREAM)]


@pytest.fixture
async def stream(redis_client: aioredis.Redis) -> Stream:
    helper = Stream(redis_client)
    await helper.create_group()
    return helper


@pytest.fixture
def applier(redis_client: aioredis.Redis) -> EventApplier:
    return EventApplier(redis_client, history_cap=100, half_life_days=30)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        consumer_name="c1",
        claim_idle_ms=100,
        consumer_block_ms=10,
        claim_interval_seconds=0.05,
        trim_interval_seconds=0.05,
        artifact_url=f"file://{tmp_path / 'artifacts'}",
        log_json=False,
    )


@pytest.fixture
def dump_state(redis_client: aioredis.Redis) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Every key's value (not TTLs), to prove an operation changed nothing. The pipeline's
    own counters are left out: counting a redelivery is the point of them."""

    async def dump() -> dict[str, Any]:
        state: dict[str, Any] = {}
        async for name in redis_client.scan_iter(count=1000):
            if name.startswith(keys.key("pipeline")):
                continue
            kind = await redis_client.type(name)
            if kind == "hash":
                state[name] = await redis_client.hgetall(name)
            elif kind == "zset":
                state[name] = await redis_client.zrange(name, 0, -1, withscores=True)
            elif kind == "set":
                state[name] = await redis_client.smembers(name)
            elif kind == "string":
                state[name] = await redis_client.get(name)
            elif kind == "stream":
                state[name] = await redis_client.xrange(name)
            else:  # pragma: no cover - the feature-store writes no other types
                state[name] = kind
        return state

    return dump


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(async_predicate, within=3.0)``: poll until true, else fail."""

    async def wait(predicate: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
        deadline = time.monotonic() + within
        while not await predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {within} s")
            await asyncio.sleep(0.02)

    return wait


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The app's lifespan reconfigures the root logger; put pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
