"""StreamConsumer: reads through the group, dead-letters bad entries, claims, re-reads, trims."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from feature_store.applier import ApplyResult
from feature_store.consumer import StreamConsumer
from recsys_shared import keys
from recsys_shared.schemas import EventType, StoredEvent


@pytest.fixture
def consumer(redis_client, settings, stream) -> StreamConsumer:
    # ``stream`` first: the consumer group exists before anything reads.
    return StreamConsumer(redis_client, settings)


async def applied_items(client, user: str) -> dict[str, float]:
    raw = await client.hgetall(keys.user_items(user))
    return {item: float(weight) for item, weight in raw.items()}


async def test_consume_once_applies_valid_and_dead_letters_invalid_entries(
    redis_client, consumer, stream, make_event
):
    good = [make_event("u1", "i1", EventType.CLICK), make_event("u2", "i2", EventType.LIKE)]
    first = await stream.add(good[0])
    bad_json = await stream.add_raw({"e": "{not json"})
    missing_fields = await stream.add_raw({"e": json.dumps({"event_id": "x", "user_id": "u9"})})
    no_event_field = await stream.add_raw({"other": "1"})
    await stream.add(good[1])

    assert await consumer.consume_once() == 5

    assert await applied_items(redis_client, "u1") == {"i1": 2.0}
    assert await applied_items(redis_client, "u2") == {"i2": 4.0}
    assert await redis_client.exists(keys.user_items("u9")) == 0
    assert await redis_client.smembers(keys.USERS) == {"u1", "u2"}

    dead = {entry["stream_id"]: entry for entry in await stream.dead_letters()}
    assert set(dead) == {bad_json, missing_fields, no_event_field}
    for entry in dead.values():
        assert entry["reason"].startswith("invalid_event: ")
    assert "Field required" in dead[missing_fields]["reason"]
    assert dead[bad_json]["entry"] == "{not json"
    assert first not in dead

    assert await stream.pending() == 0
    stats = await redis_client.hgetall(keys.PIPELINE_STATS)
    assert (stats["applied"], stats["redelivered"], stats["dead_letters"]) == ("2", "0", "3")
    assert await redis_client.hget(keys.CONSUMER_HEARTBEATS, "c1") is not None
    assert consumer.last_batch_at > 0


async def test_consume_once_with_nothing_new_reads_nothing(consumer, stream):
    assert await consumer.consume_once() == 0
    assert await consumer.consume_once(own_pending=True) == 0


async def test_claim_stalled_takes_over_entries_a_dead_consumer_left_pending(
    redis_client, consumer, settings, stream, make_event
):
    events = [make_event(f"u{n}", "i1", EventType.PURCHASE) for n in range(3)]
    for event in events:
        await stream.add(event)
    assert len(await stream.read("dead")) == 3  # delivered, then the consumer died
    assert len(await stream.pending_ids("dead")) == 3

    patient = StreamConsumer(
        redis_client, settings.model_copy(update={"consumer_name": "c2", "claim_idle_ms": 60_000})
    )
    assert await patient.claim_stalled() == 0  # not idle long enough yet
    assert len(await stream.pending_ids("dead")) == 3
    assert await stream.pending_ids("c2") == []

    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await consumer.claim_stalled() == 3

    for n in range(3):
        assert await applied_items(redis_client, f"u{n}") == {"i1": 5.0}
    assert await stream.pending() == 0
    assert await redis_client.hget(keys.PIPELINE_STATS, "applied") == "3"
    # Nothing is left to claim.
    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await consumer.claim_stalled() == 0


async def test_a_slow_consumer_racing_its_claimer_does_not_apply_twice(
    redis_client, consumer, settings, stream, make_event, applier, dump_state
):
    # "slow" reads a batch and stalls past the claim time; c1 claims and applies it; then "slow"
    # wakes up and applies its copy of the same entries.
    for n in range(2):
        await stream.add(make_event(f"u{n}", "i1", EventType.LIKE))
    slow_batch = [
        (stream_id, StoredEvent.model_validate_json(fields["e"]))
        for stream_id, fields in await stream.read("slow")
    ]
    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await consumer.claim_stalled() == 2
    after_claim = await dump_state()

    assert await applier.apply(slow_batch, now=999.0) == ApplyResult(applied=0, duplicates=2)

    assert await dump_state() == after_claim
    for n in range(2):
        assert await applied_items(redis_client, f"u{n}") == {"i1": 4.0}
        assert await redis_client.hget(keys.user_meta(f"u{n}"), "epoch") == "1"
    assert await stream.pending() == 0


async def test_own_pending_rereads_this_consumers_unacknowledged_entries(
    redis_client, consumer, stream, make_event
):
    for n in range(3):
        await stream.add(make_event("u1", f"i{n}", EventType.VIEW))
    # Read under our own name, then "crashed" before applying.
    assert len(await stream.read("c1")) == 3
    # Someone else's pending entries are not ours to re-read.
    await stream.add(make_event("u2", "i9", EventType.VIEW))
    await stream.read("other")

    assert await consumer.consume_once() == 0  # nothing new
    assert await stream.pending() == 4

    assert await consumer.consume_once(own_pending=True) == 3

    assert await applied_items(redis_client, "u1") == {"i0": 1.0, "i1": 1.0, "i2": 1.0}
    assert await redis_client.exists(keys.user_items("u2")) == 0
    assert await stream.pending_ids("c1") == []
    assert len(await stream.pending_ids("other")) == 1
    assert await consumer.consume_once(own_pending=True) == 0


async def test_an_entry_deleted_while_pending_is_dead_lettered_and_acknowledged(
    redis_client, consumer, stream, make_event
):
    kept = await stream.add(make_event("u1", "i1", EventType.VIEW))
    deleted = await stream.add(make_event("u1", "i2", EventType.VIEW))
    await stream.read("c1")
    await redis_client.xdel(keys.EVENTS_STREAM, deleted)

    assert await consumer.consume_once(own_pending=True) == 2

    assert await applied_items(redis_client, "u1") == {"i1": 1.0}
    dead = await stream.dead_letters()
    assert [(entry["stream_id"], entry["reason"]) for entry in dead] == [(deleted, "entry_deleted")]
    assert kept not in {entry["stream_id"] for entry in dead}
    assert await stream.pending() == 0


async def test_trim_drops_only_entries_every_group_has_applied(
    redis_client, consumer, stream, make_event
):
    applied_early = [await stream.add(make_event("u1", f"a{n}")) for n in range(4)]
    assert await consumer.consume_once() == 4
    stuck = await stream.add(make_event("u2", "s"))
    await stream.read("dead")  # delivered to a consumer that never acknowledges
    after = [await stream.add(make_event("u3", f"b{n}")) for n in range(2)]
    assert await consumer.consume_once() == 2
    assert await stream.pending_ids() == [stuck]

    await consumer.trim()

    remaining = [stream_id for stream_id, _ in await redis_client.xrange(keys.EVENTS_STREAM)]
    assert remaining == [stuck, *after]
    assert not set(applied_early) & set(remaining)

    # Once the stuck entry is claimed and applied, everything may go.
    await asyncio.sleep(consumer.settings.claim_idle_ms / 1000 + 0.05)
    assert await consumer.claim_stalled() == 1
    await consumer.trim()
    assert await redis_client.xlen(keys.EVENTS_STREAM) == 0


async def test_trim_keeps_what_another_group_has_not_read(
    redis_client, consumer, stream, make_event
):
    await stream.add(make_event("u1", "i1"))
    await redis_client.xgroup_create(keys.EVENTS_STREAM, "another-group", id="0")
    await stream.add(make_event("u1", "i2"))
    assert await consumer.consume_once() == 2

    await consumer.trim()

    assert await redis_client.xlen(keys.EVENTS_STREAM) == 2


async def test_trim_without_a_stream_or_group_does_nothing(redis_client, settings, make_event):
    consumer = StreamConsumer(redis_client, settings)
    await consumer.trim()  # no stream at all
    await redis_client.xadd(keys.EVENTS_STREAM, {"e": make_event("u", "i").model_dump_json()})
    await consumer.trim()  # a stream nobody consumes yet
    assert await redis_client.xlen(keys.EVENTS_STREAM) == 1


@pytest.mark.parametrize(
    "block_ms",
    [
        10,  # the deletion usually lands between two reads: the next read gets NOGROUP
        1000,  # the deletion lands during a blocked read, which Redis 7 ends with UNBLOCKED
    ],
)
async def test_run_applies_events_and_survives_the_stream_being_deleted(
    redis_client, settings, make_event, eventually, block_ms
):
    consumer = StreamConsumer(
        redis_client,
        settings.model_copy(
            update={
                "consumer_block_ms": block_ms,
                "claim_interval_seconds": 60.0,
                "trim_interval_seconds": 60.0,
            }
        ),
    )
    task = asyncio.create_task(consumer.run())

    async def applied(user: str) -> bool:
        return bool(await redis_client.exists(keys.user_items(user)))

    async def group_exists() -> bool:
        if not await redis_client.exists(keys.EVENTS_STREAM):
            return False
        groups = await redis_client.xinfo_groups(keys.EVENTS_STREAM)
        return any(group["name"] == keys.EVENTS_GROUP for group in groups)

    try:
        await eventually(group_exists)
        await redis_client.xadd(keys.EVENTS_STREAM, {"e": make_event("u1", "i1").model_dump_json()})
        await eventually(lambda: applied("u1"))
        await asyncio.sleep(0.1)  # back in its (blocking) read

        # Redis loses the stream and its group (a flush, a restart without persistence).
        await redis_client.delete(keys.EVENTS_STREAM)
        await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
        await redis_client.xadd(keys.EVENTS_STREAM, {"e": make_event("u2", "i1").model_dump_json()})
        await eventually(lambda: applied("u2"), within=block_ms / 1000 + 3.0)

        assert not task.done()
        assert await group_exists()
        assert await redis_client.xpending(keys.EVENTS_STREAM, keys.EVENTS_GROUP) == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
    finally:
        # As the app's lifespan does: stop, and cancel a read that is still blocking.
        consumer.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
