"""StreamConsumer: reads a partition through the group, dead-letters bad entries, re-reads its
own pending entries, and keeps reading through every Redis failure."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from feature_store.config import Settings
from feature_store.consumer import StreamConsumer, parsed
from recsys_shared import keys
from recsys_shared.processes import RedisServer
from recsys_shared.redis import RedisClient, connect
from recsys_shared.schemas import RATING_NEUTRAL, EventType, StoredEvent
from recsys_shared.testing import in_background

P0 = keys.Partitions(1).all[0]


def applied_items(client: redis.Redis, user: str, partition: keys.Partition = P0) -> dict:
    raw = client.hgetall(partition.user_items(user))
    return {item: float(weight) for item, weight in raw.items()}


async def test_a_read_applies_valid_and_dead_letters_invalid_entries(
    sync_redis, consumer, stream, make_event, read_once
):
    good = [make_event("u1", "i1", EventType.CLICK), make_event("u2", "i2", EventType.LIKE)]
    first = await stream.add(good[0])
    bad_json = await stream.add_raw({keys.EVENT_FIELD: "{not json"})
    missing_fields = await stream.add_raw(
        {keys.EVENT_FIELD: json.dumps({"event_id": "x", "user_id": "u9"})}
    )
    no_event_field = await stream.add_raw({"other": "1"})
    await stream.add(good[1])

    assert await read_once(consumer) == 5

    assert applied_items(sync_redis, "u1") == {"i1": 2.0}
    assert applied_items(sync_redis, "u2") == {"i2": 4.0}
    assert sync_redis.exists(P0.user_items("u9")) == 0
    assert set(sync_redis.zrange(P0.users, 0, -1)) == {"u1", "u2"}

    dead = {entry["stream_id"]: entry for entry in await stream.dead_letters()}
    assert set(dead) == {bad_json, missing_fields, no_event_field}
    for entry in dead.values():
        assert entry["reason"] == "invalid_event"
        assert entry["detail"]
    assert "Field required" in dead[missing_fields]["detail"]
    assert dead[bad_json]["entry"] == "{not json"
    assert first not in dead

    assert await stream.pending() == 0
    stats = sync_redis.hgetall(P0.stats)
    assert (stats["applied"], stats["redelivered"], stats["dead_letters"]) == ("2", "0", "3")
    assert sync_redis.hget(P0.heartbeats, "c1") is not None
    assert consumer.last_read_at > 0


async def test_a_read_with_nothing_new_reads_nothing(consumer, stream, read_once):
    batches_before = batches_timed()
    assert await read_once(consumer) == 0
    assert await read_once(consumer, own_pending=True) == 0
    assert consumer.last_read_at > 0  # an empty read is still a read: the consumer is alive
    assert batches_timed() == batches_before  # but not a batch: no zero-length durations


def batches_timed() -> float:
    return REGISTRY.get_sample_value("recsys_consumer_batch_duration_seconds_count") or 0.0


async def test_own_pending_rereads_this_consumers_unacknowledged_entries(
    sync_redis, consumer, stream, make_event, read_once
):
    for n in range(3):
        await stream.add(make_event("u1", f"i{n}", EventType.VIEW))
    # Read under our own name, then "crashed" before applying.
    assert len(await stream.read("c1")) == 3
    # Someone else's pending entries are not ours to re-read.
    await stream.add(make_event("u2", "i9", EventType.VIEW))
    await stream.read("other")

    assert await read_once(consumer) == 0  # nothing new
    assert await stream.pending() == 4

    assert await read_once(consumer, own_pending=True) == 3

    assert applied_items(sync_redis, "u1") == {"i0": 1.0, "i1": 1.0, "i2": 1.0}
    assert sync_redis.exists(P0.user_items("u2")) == 0
    assert await stream.pending_ids("c1") == []
    assert len(await stream.pending_ids("other")) == 1
    assert await read_once(consumer, own_pending=True) == 0


async def test_an_entry_deleted_while_pending_is_dead_lettered_and_acknowledged(
    sync_redis, consumer, stream, make_event, read_once
):
    kept = await stream.add(make_event("u1", "i1", EventType.VIEW))
    deleted = await stream.add(make_event("u1", "i2", EventType.VIEW))
    await stream.read("c1")
    sync_redis.xdel(P0.events, deleted)

    assert await read_once(consumer, own_pending=True) == 2

    assert applied_items(sync_redis, "u1") == {"i1": 1.0}
    dead = await stream.dead_letters()
    assert [(entry["stream_id"], entry["reason"]) for entry in dead] == [(deleted, "entry_deleted")]
    assert kept not in {entry["stream_id"] for entry in dead}
    assert await stream.pending() == 0


async def test_every_partition_is_read_into_its_own_keys(
    redis_client, sync_redis, settings, make_event
):
    partitions = keys.Partitions(3)
    consumer = StreamConsumer(redis_client, settings.model_copy(update={"event_partitions": 3}))
    users = [f"user-{n}" for n in range(12)]
    assert {partitions.of(user).number for user in users} == {0, 1, 2}
    for partition in partitions.all:
        await consumer.ensure_group(partition)
    for user in users:
        sync_redis.xadd(
            partitions.of(user).events,
            {keys.EVENT_FIELD: make_event(user, "i1", EventType.CLICK).model_dump_json()},
        )

    read = [await reader.read_once(redis_client) for reader in consumer.readers]

    assert read == [
        sum(1 for user in users if partitions.of(user) == partition) for partition in partitions.all
    ]
    for user in users:
        assert applied_items(sync_redis, user, partitions.of(user)) == {"i1": 2.0}
    for partition in partitions.all:
        assert sync_redis.xpending(partition.events, keys.EVENTS_GROUP)["pending"] == 0
        assert sync_redis.hget(partition.heartbeats, "c1") is not None


# ── the read loop ─────────────────────────────────────────────────────────────────────────
def group_exists(client: redis.Redis, partition: keys.Partition = P0) -> bool:
    if not client.exists(partition.events):
        return False
    groups = client.xinfo_groups(partition.events)
    return any(group["name"] == keys.EVENTS_GROUP for group in groups)


@pytest.mark.parametrize(
    "block_ms",
    [
        10,  # the deletion usually lands between two reads: the next read gets NOGROUP
        1000,  # the deletion lands during a blocked read, which Redis 7 ends with UNBLOCKED
    ],
)
async def test_run_applies_events_and_survives_the_stream_being_deleted(
    redis_client, sync_redis, settings, make_event, eventually, block_ms
):
    consumer = StreamConsumer(
        redis_client, settings.model_copy(update={"consumer_block_ms": block_ms})
    )

    async def applied(user: str) -> bool:
        return bool(sync_redis.exists(P0.user_items(user)))

    async def recreated() -> bool:
        return group_exists(sync_redis)

    async with in_background(consumer.run()) as task:
        await eventually(recreated)
        sync_redis.xadd(P0.events, {keys.EVENT_FIELD: make_event("u1", "i1").model_dump_json()})
        await eventually(lambda: applied("u1"))
        await asyncio.sleep(0.1)  # back in its (blocking) read

        # Redis loses the stream and its group (a flush, a restart without persistence).
        sync_redis.delete(P0.events)
        await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
        sync_redis.xadd(P0.events, {keys.EVENT_FIELD: make_event("u2", "i1").model_dump_json()})
        await eventually(lambda: applied("u2"), within=block_ms / 1000 + 3.0)

        assert not task.done()
        assert group_exists(sync_redis)
        assert sync_redis.xpending(P0.events, keys.EVENTS_GROUP)["pending"] == 0


async def test_batches_read_ahead_are_applied_in_the_order_read(
    redis_client, sync_redis, settings, make_event, eventually
):
    # Batches of two, each read while the one before is applied: a user's ratings of one
    # item must still land in the order they were sent (the last one wins).
    consumer = StreamConsumer(
        redis_client,
        settings.model_copy(update={"consumer_block_ms": 50, "consumer_batch_size": 2}),
    )
    await consumer.ensure_group(P0)
    values = [1.0, 5.0, 2.0, 4.0, 3.0, 4.5, 1.5, 5.0, 2.5]
    for value in values:
        event = make_event("u1", "i1", EventType.RATING, value=value)
        sync_redis.xadd(P0.events, {keys.EVENT_FIELD: event.model_dump_json()})

    async with in_background(consumer.run()) as task:

        async def all_applied() -> bool:
            return sync_redis.hget(P0.stats, "applied") == str(len(values))

        await eventually(all_applied)
        assert not task.done(), task.exception()

    assert applied_items(sync_redis, "u1") == {"i1": values[-1] - RATING_NEUTRAL}
    assert sync_redis.xpending(P0.events, keys.EVENTS_GROUP)["pending"] == 0


@pytest.fixture
def own_settings(own_redis: RedisServer, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=own_redis.url,
        redis_timeout_seconds=0.5,
        consumer_name="c1",
        consumer_block_ms=50,
        artifact_url=f"file://{tmp_path / 'artifacts'}",
        log_json=False,
    )


@pytest.fixture
async def own_client(own_settings: Settings) -> AsyncIterator[RedisClient]:
    client = await connect(own_settings.redis_dsn, command_timeout=0.5)
    yield client
    await client.aclose()


@pytest.fixture
def own_inspector(own_redis: RedisServer) -> Iterator[redis.Redis]:
    with own_redis.inspector() as client:
        yield client


def failures_counted(error: str) -> float:
    value = REGISTRY.get_sample_value("recsys_consumer_failures_total", {"error": error})
    return value or 0.0


async def test_the_loop_waits_out_redis_at_its_memory_limit_and_then_applies_everything(
    own_client, own_inspector, own_settings, make_event, eventually
):
    events = [make_event(f"u{n}", "i1", EventType.CLICK) for n in range(5)]
    own_inspector.xgroup_create(P0.events, keys.EVENTS_GROUP, id="0", mkstream=True)
    for event in events:
        own_inspector.xadd(P0.events, {keys.EVENT_FIELD: event.model_dump_json()})
    # Full: every write is refused (noeviction) until there is room again.
    own_inspector.config_set("maxmemory", 1)
    refused_before = failures_counted("StoreOutOfMemory")
    consumer = StreamConsumer(own_client, own_settings)

    async with in_background(consumer.run()) as task:

        async def refused() -> bool:
            return failures_counted("StoreOutOfMemory") > refused_before

        await eventually(refused)
        await asyncio.sleep(0.5)
        assert not task.done()
        assert own_inspector.exists(P0.user_items("u0")) == 0

        own_inspector.config_set("maxmemory", 0)

        async def all_applied() -> bool:
            return all(own_inspector.exists(P0.user_items(event.user_id)) for event in events)

        await eventually(all_applied, within=10.0)
        assert not task.done()
        assert own_inspector.hget(P0.stats, "applied") == "5"
        assert own_inspector.xpending(P0.events, keys.EVENTS_GROUP)["pending"] == 0


async def test_the_loop_waits_out_a_stopped_redis_and_then_applies_everything(
    own_redis, own_client, own_inspector, own_settings, make_event, eventually
):
    consumer = StreamConsumer(own_client, own_settings)

    async def applied(*users: str) -> bool:
        return all(own_inspector.exists(P0.user_items(user)) for user in users)

    async with in_background(consumer.run()) as task:

        async def ready() -> bool:
            return group_exists(own_inspector)

        await eventually(ready)
        own_inspector.xadd(P0.events, {keys.EVENT_FIELD: make_event("u0", "i1").model_dump_json()})
        await eventually(lambda: applied("u0"))
        unavailable_before = failures_counted("StoreUnavailable")

        own_redis.stop()

        async def failing() -> bool:
            return failures_counted("StoreUnavailable") > unavailable_before

        await eventually(failing)
        await asyncio.sleep(1.0)
        assert not task.done(), task.exception()

        own_redis.start()  # same port, same data
        late = [make_event(f"u{n}", "i2") for n in range(1, 6)]
        for event in late:
            own_inspector.xadd(P0.events, {keys.EVENT_FIELD: event.model_dump_json()})

        await eventually(lambda: applied(*(event.user_id for event in late)), within=15.0)
        assert not task.done()
        assert own_inspector.hget(P0.stats, "applied") == "6"
        assert own_inspector.xpending(P0.events, keys.EVENTS_GROUP)["pending"] == 0


def test_a_batch_is_parsed_whole_and_a_bad_entry_is_found_alone() -> None:
    good = StoredEvent(
        event_id="e1", user_id="u1", item_id="i1", type=EventType.VIEW, ts=1.0, received_at=2.0
    ).model_dump_json()
    entries = [
        ("1-0", {keys.EVENT_FIELD: good}),
        ("2-0", {keys.EVENT_FIELD: "{},{}"}),  # two JSON values: would shift a joined array
        ("3-0", None),
        ("4-0", {keys.EVENT_FIELD: good}),
        ("5-0", {keys.EVENT_FIELD: "not json"}),
    ]

    valid, dead = parsed(entries)
    whole, none_dead = parsed([entries[0], entries[3]])

    assert [stream_id for stream_id, _ in valid] == ["1-0", "4-0"]
    assert {(letter.stream_id, letter.reason) for letter in dead} == {
        ("2-0", "invalid_event"),
        ("3-0", "entry_deleted"),
        ("5-0", "invalid_event"),
    }
    assert [event.user_id for _, event in whole] == ["u1", "u1"]
    assert none_dead == []


async def test_an_entry_a_stalled_consumer_and_its_claimer_both_hold_is_dead_lettered_once(
    redis_client, sync_redis, consumer, housekeeping, settings, stream, make_event
):
    bad = await stream.add_raw({keys.EVENT_FIELD: "{not json"})
    await stream.add(make_event("u1", "i1", EventType.LIKE))
    held = await stream.read("slow")  # then "slow" stalls past the claim time
    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await housekeeping.claim_stalled() == 2  # c1 takes the batch and deals with it

    slow = StreamConsumer(redis_client, settings.model_copy(update={"consumer_name": "slow"}))
    await slow.process(P0, held)  # "slow" wakes up and finishes the batch it read

    assert [entry["stream_id"] for entry in await stream.dead_letters()] == [bad]
    stats = sync_redis.hgetall(P0.stats)
    assert (stats["applied"], stats["dead_letters"], stats["redelivered"]) == ("1", "1", "2")
    assert await stream.pending() == 0


async def test_a_consumer_stopped_with_batches_in_flight_applies_them_first(
    redis_client, sync_redis, settings, make_event, monkeypatch
):
    """A stop (SIGTERM in a rolling update) while one batch is applied and the next waits
    behind it: both are applied and acknowledged before the reader ends, so nothing is left
    pending under a consumer name the next pod may not have (claimed only 30 s later)."""
    consumer = StreamConsumer(
        redis_client,
        settings.model_copy(update={"consumer_block_ms": 50, "consumer_batch_size": 2}),
    )
    await consumer.ensure_group(P0)
    for n in range(6):
        sync_redis.xadd(P0.events, {keys.EVENT_FIELD: make_event(f"u{n}", "i1").model_dump_json()})
    prepare, commit = consumer.prepare, consumer.commit
    both_read = asyncio.Event()
    prepared = 0

    async def counting_prepare(partition: Any, entries: list[Any]) -> Any:
        nonlocal prepared
        batch = await prepare(partition, entries)
        prepared += bool(entries)  # not the empty read of its own pending entries
        if prepared == 2:  # the reader now waits for the first batch's script
            both_read.set()
        return batch

    async def slow_commit(batch: Any) -> None:
        await asyncio.sleep(0.2)  # a script that takes a while: the stop arrives meanwhile
        await commit(batch)

    monkeypatch.setattr(consumer, "prepare", counting_prepare)
    monkeypatch.setattr(consumer, "commit", slow_commit)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(both_read.wait(), timeout=10)

    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert sync_redis.hget(P0.stats, "applied") == "4"
    assert sync_redis.xpending(P0.events, keys.EVENTS_GROUP)["pending"] == 0
