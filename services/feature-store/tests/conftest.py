"""Fixtures for the feature-store tests: events, a real partition stream with its consumer
group, settings.

Everything runs against the session's real redis-server (``redis_client``/``redis_url`` from
``recsys_shared.testing``), because the applier, the catalogue, dead letters and erasure are
Lua scripts. The services' own client (``redis_client``) writes and reads the streams as the
gateway and the consumer do; tests look inside with a blocking redis-py client
(``sync_redis``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from feature_store.applier import EventApplier
from feature_store.config import Settings
from feature_store.consumer import StreamConsumer, stream_entries
from feature_store.erasure import Eraser
from feature_store.housekeeping import Housekeeping
from recsys_shared import keys
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import EventType, StoredEvent

#: A sane event time: a day ago, well inside what the snapshot quality check accepts.
BASE_TS = float(int(time.time()) - 86_400)
#: The default deployment: one partition, which holds every user.
PARTITIONS = keys.Partitions(1)
P0 = PARTITIONS.all[0]


@pytest.fixture
def base_ts() -> float:
    return BASE_TS


@pytest.fixture
def make_event() -> Callable[..., StoredEvent]:
    """``make_event(user, item, type="view", value=None, ts=None, event_id=None,
    received_at=None)``."""
    counter = itertools.count(1)

    def make(
        user_id: str,
        item_id: str,
        type: EventType | str = EventType.VIEW,
        *,
        value: float | None = None,
        ts: float | None = None,
        event_id: str | None = None,
        received_at: float | None = None,
    ) -> StoredEvent:
        number = next(counter)
        return StoredEvent(
            event_id=event_id or f"ev-{number}",
            user_id=user_id,
            item_id=item_id,
            type=EventType(type),
            value=value,
            ts=BASE_TS + number if ts is None else ts,
            received_at=time.time() if received_at is None else received_at,
        )

    return make


class Stream:
    """One partition's real events stream and the feature-store's consumer group, as the
    gateway fills it."""

    def __init__(self, client: RedisClient, partition: keys.Partition = P0) -> None:
        self.redis = client
        self.partition = partition
        self.name = partition.events

    async def create_group(self, settings: Settings) -> None:
        """The stream and its group, created by the consumer's own code, as at its start-up."""
        await StreamConsumer(self.redis, settings).ensure_group(self.partition)

    async def add(self, event: StoredEvent) -> str:
        """XADD one event exactly as the gateway's ingest script does."""
        return await self.add_raw({keys.EVENT_FIELD: event.model_dump_json(exclude_none=True)})

    async def add_raw(self, fields: dict[str, str]) -> str:
        flat = [part for pair in fields.items() for part in pair]
        stream_id: str = await self.redis.execute("XADD", self.name, "*", *flat)
        return stream_id

    async def read(self, consumer: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """XREADGROUP new entries as ``consumer``: they become pending for it."""
        reply = await self.redis.execute(
            "XREADGROUP", "GROUP", keys.EVENTS_GROUP, consumer, "COUNT", count,
            "STREAMS", self.name, ">",
        )  # fmt: skip
        return [(entry_id, fields or {}) for entry_id, fields in stream_entries(reply, self.name)]

    async def deliver(
        self, events: list[StoredEvent], consumer: str = "reader"
    ) -> list[tuple[str, StoredEvent]]:
        """XADD the events and read them through the group, so they are pending, as the
        consumer hands them to the applier."""
        for event in events:
            await self.add(event)
        entries = await self.read(consumer)
        assert len(entries) == len(events)
        return [
            (stream_id, StoredEvent.model_validate_json(fields[keys.EVENT_FIELD]))
            for stream_id, fields in entries
        ]

    async def pending(self) -> int:
        summary = await self.redis.execute("XPENDING", self.name, keys.EVENTS_GROUP)
        return int(summary[0])

    async def pending_ids(self, consumer: str | None = None) -> list[str]:
        command: list[str | int] = ["XPENDING", self.name, keys.EVENTS_GROUP, "-", "+", 10_000]
        if consumer is not None:
            command.append(consumer)
        return [row[0] for row in await self.redis.execute(*command)]

    async def ids(self) -> list[str]:
        return list((await self.redis.execute("XRANGE", self.name, "-", "+")) or {})

    async def dead_letters(self) -> list[dict[str, str]]:
        reply = await self.redis.execute("XRANGE", self.partition.dead_letters, "-", "+")
        return [dict(pairs) for pairs in (reply or {}).values()]


@pytest.fixture
async def stream(redis_client: RedisClient, settings: Settings) -> Stream:
    helper = Stream(redis_client)
    await helper.create_group(settings)
    return helper


@pytest.fixture
def make_stream(
    redis_client: RedisClient, settings: Settings
) -> Callable[[keys.Partition], Awaitable[Stream]]:
    """``await make_stream(partition)``: another partition's stream, its group created."""

    async def make(partition: keys.Partition) -> Stream:
        helper = Stream(redis_client, partition)
        await helper.create_group(settings)
        return helper

    return make


@pytest.fixture
def applier(redis_client: RedisClient) -> EventApplier:
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
def consumer(redis_client: RedisClient, settings: Settings, stream: Stream) -> StreamConsumer:
    # ``stream`` first: the consumer group exists before anything reads.
    return StreamConsumer(redis_client, settings)


@pytest.fixture
def housekeeping(
    redis_client: RedisClient, settings: Settings, consumer: StreamConsumer
) -> Housekeeping:
    eraser = Eraser(redis_client, settings.partitions, ephemeral=redis_client)
    return Housekeeping(redis_client, settings, consumer, eraser)


@pytest.fixture
def read_once() -> Callable[..., Awaitable[int]]:
    """``await read_once(consumer, own_pending=False)``: one read of the only partition, on
    the client the consumer was made with; how many entries it read."""

    async def read(consumer: StreamConsumer, *, own_pending: bool = False) -> int:
        [reader] = consumer.readers
        return await reader.read_once(consumer.redis, own_pending=own_pending)

    return read


def is_pipeline_counter(name: str) -> bool:
    """A partition's counters (totals, and events per second): they count deliveries."""
    base = name.split("}", 1)[0] + "}"
    return name == f"{base}:stats" or name.startswith((f"{base}:applied:", f"{base}:accepted:"))


@pytest.fixture
def dump_state(sync_redis: redis.Redis) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Every key's value (not TTLs), to prove an operation changed nothing. The pipeline's
    own counters are left out: counting a redelivery is the point of them."""

    async def dump() -> dict[str, Any]:
        state: dict[str, Any] = {}
        for name in sync_redis.scan_iter(count=1000):
            if is_pipeline_counter(name):
                continue
            kind = sync_redis.type(name)
            if kind == "hash":
                state[name] = sync_redis.hgetall(name)
            elif kind == "zset":
                state[name] = sync_redis.zrange(name, 0, -1, withscores=True)
            elif kind == "set":
                state[name] = sync_redis.smembers(name)
            elif kind == "string":
                state[name] = sync_redis.get(name)
            elif kind == "stream":
                state[name] = sync_redis.xrange(name)
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
def stored_item(sync_redis: redis.Redis) -> Callable[[str], tuple[str, list[str], str]]:
    """An item as the catalogue stored it: (title, categories, available "1" or "0")."""

    def read(item_id: str) -> tuple[str, list[str], str]:
        item = sync_redis.hgetall(keys.item(item_id))
        return item["title"], json.loads(item["categories"]), item["available"]

    return read
