"""Dead letters: what cannot be applied is kept per partition with its reason, listed by reason,
capped, and replayed into its partition's stream."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from feature_store import dead_letters
from feature_store.config import Settings
from feature_store.consumer import StreamConsumer
from feature_store.dead_letters import DeadLetter, dead_letter
from feature_store.erasure import Eraser
from recsys_shared import keys
from recsys_shared.schemas import EventType

PARTITIONS = keys.Partitions(2)
#: The partition of the tests with one (the ``stream`` and ``consumer`` fixtures).
P0 = keys.Partitions(1).all[0]


def user_in(partition: keys.Partition) -> str:
    return next(f"user-{n}" for n in range(100) if PARTITIONS.of(f"user-{n}") == partition)


@pytest.fixture
def two_partitions(settings: Settings) -> Settings:
    return settings.model_copy(update={"event_partitions": 2})


@pytest.fixture
async def consumer2(redis_client, two_partitions) -> StreamConsumer:
    consumer = StreamConsumer(redis_client, two_partitions)
    for partition in PARTITIONS.all:
        await consumer.ensure_group(partition)
    return consumer


def pending(sync_redis, partition: keys.Partition, count: int = 1) -> list[str]:
    """Ids of ``count`` entries read through the group and not yet acknowledged, as the
    consumer holds those it dead-letters; deleted from the stream (still pending), so that the
    stream shows only what a replay puts back."""
    with sync_redis.pipeline(transaction=False) as pipe:
        for _ in range(count):
            pipe.xadd(partition.events, {keys.EVENT_FIELD: "read, not yet acknowledged"})
        ids = pipe.execute()
    sync_redis.xreadgroup(keys.EVENTS_GROUP, "c1", {partition.events: ">"}, count=count)
    sync_redis.xdel(partition.events, *ids)
    return ids


async def read_every_partition(consumer: StreamConsumer, *, own_pending: bool = False) -> int:
    return sum(
        [
            await reader.read_once(consumer.redis, own_pending=own_pending)
            for reader in consumer.readers
        ]
    )


async def test_invalid_entries_go_to_their_partitions_dead_letters_with_reason_and_detail(
    redis_client, sync_redis, consumer2, make_event
):
    first, second = PARTITIONS.all
    sync_redis.xadd(first.events, {keys.EVENT_FIELD: "garbage"})
    sync_redis.xadd(
        second.events, {keys.EVENT_FIELD: json.dumps({"user_id": user_in(second), "item_id": "i"})}
    )
    good = make_event(user_in(second), "i1", EventType.LIKE)
    sync_redis.xadd(second.events, {keys.EVENT_FIELD: good.model_dump_json()})

    assert await read_every_partition(consumer2) == 3

    [garbage] = await dead_letters.read_all(redis_client, first)
    assert (garbage.partition, garbage.reason, garbage.entry) == (0, "invalid_event", "garbage")
    assert "JSON" in garbage.detail
    [incomplete] = await dead_letters.read_all(redis_client, second)
    assert (incomplete.partition, incomplete.reason) == (1, "invalid_event")
    assert "Field required" in incomplete.detail
    assert sync_redis.xrange(second.events)[0][0] == incomplete.stream_id
    for partition, dead in zip(PARTITIONS.all, (1, 1), strict=True):
        assert sync_redis.hget(partition.stats, "dead_letters") == str(dead)
        assert sync_redis.xpending(partition.events, keys.EVENTS_GROUP)["pending"] == 0
    assert sync_redis.hget(second.stats, "applied") == "1"


@pytest.mark.usefixtures("consumer2")
async def test_dead_letters_are_listed_newest_first_and_counted_by_reason(redis_client, sync_redis):
    first, second = PARTITIONS.all
    oldest, newest = pending(sync_redis, first, 2)
    [middle] = pending(sync_redis, second)
    # A millisecond apart: a dead letter's time is its stream id's, and two partitions' letters
    # within one millisecond are simultaneous (either order would be right).
    await dead_letter(
        redis_client, first, [DeadLetter(oldest, "invalid_event", "bad", "no JSON")], cap=100
    )
    await asyncio.sleep(0.002)
    await dead_letter(redis_client, second, [DeadLetter(middle, "entry_deleted", "")], cap=100)
    await asyncio.sleep(0.002)
    await dead_letter(
        redis_client, first, [DeadLetter(newest, "invalid_event", "worse", "no JSON")], cap=100
    )

    everything = await dead_letters.list_dead_letters(redis_client, PARTITIONS.all)
    assert everything.total == 3
    assert everything.by_reason == {"invalid_event": 2, "entry_deleted": 1}
    assert [letter.stream_id for letter in everything.entries] == [newest, middle, oldest]
    assert [letter.partition for letter in everything.entries] == [0, 1, 0]

    invalid = await dead_letters.list_dead_letters(
        redis_client, PARTITIONS.all, reason="invalid_event", limit=1
    )
    assert invalid.total == 3  # the totals always count every dead letter
    assert [(letter.stream_id, letter.entry, letter.detail) for letter in invalid.entries] == [
        (newest, "worse", "no JSON")
    ]
    none = await dead_letters.list_dead_letters(redis_client, PARTITIONS.all, reason="other")
    assert none.entries == []


@pytest.mark.usefixtures("consumer2")
async def test_each_partitions_dead_letters_are_capped_oldest_first(redis_client, sync_redis):
    first, second = PARTITIONS.all
    cap = 100
    ids = pending(sync_redis, first, 1000)
    for batch in range(10):
        letters = [
            DeadLetter(stream_id, "invalid_event", f"entry {stream_id}")
            for stream_id in ids[100 * batch : 100 * (batch + 1)]
        ]
        await dead_letter(redis_client, first, letters, cap=cap)
    [other] = pending(sync_redis, second)
    await dead_letter(redis_client, second, [DeadLetter(other, "invalid_event", "x")], cap=cap)

    kept = sync_redis.xrange(first.dead_letters)
    # Trimmed in whole stream nodes (MAXLEN ~): at least the cap, far below the 1000 written.
    assert cap <= len(kept) < 2 * cap
    assert kept[-1][1]["stream_id"] == ids[-1]  # the newest stay
    assert ids[0] not in {fields["stream_id"] for _, fields in kept}  # the oldest went first
    assert sync_redis.xlen(second.dead_letters) == 1
    # The counter says how many were ever dead-lettered, not how many are kept.
    assert sync_redis.hget(first.stats, "dead_letters") == "1000"


async def test_replay_puts_events_back_and_a_still_invalid_one_comes_back(
    redis_client, sync_redis, consumer2, make_event
):
    first, second = PARTITIONS.all
    # A valid event refused by an earlier version (say), one still invalid, one with nothing
    # left to replay.
    fixed = make_event(user_in(second), "i1", EventType.PURCHASE)
    [refused] = pending(sync_redis, second)
    garbage, deleted = pending(sync_redis, first, 2)
    await dead_letter(
        redis_client,
        second,
        [DeadLetter(refused, "invalid_event", fixed.model_dump_json())],
        cap=100,
    )
    await dead_letter(
        redis_client, first, [DeadLetter(garbage, "invalid_event", "garbage")], cap=100
    )
    await dead_letter(redis_client, first, [DeadLetter(deleted, "entry_deleted", "")], cap=100)

    result = await dead_letters.replay(redis_client, PARTITIONS.all, reason="invalid_event")

    assert (result.replayed, result.skipped) == (2, 0)
    assert [letter.reason for letter in await dead_letters.read_all(redis_client, first)] == [
        "entry_deleted"
    ]
    assert await dead_letters.read_all(redis_client, second) == []
    assert [fields[keys.EVENT_FIELD] for _, fields in sync_redis.xrange(first.events)] == [
        "garbage"
    ]
    assert sync_redis.xlen(second.events) == 1

    assert await read_every_partition(consumer2) == 2

    assert sync_redis.hgetall(second.user_items(fixed.user_id)) == {"i1": "5"}
    back = await dead_letters.read_all(redis_client, first)
    assert sorted((letter.reason, letter.entry) for letter in back) == [
        ("entry_deleted", ""),
        ("invalid_event", "garbage"),
    ]

    # Nothing to replay in an entry that was deleted: skipped, and kept.
    result = await dead_letters.replay(redis_client, PARTITIONS.all, reason="entry_deleted")
    assert (result.replayed, result.skipped) == (0, 1)
    assert len(await dead_letters.read_all(redis_client, first)) == 2


@pytest.mark.usefixtures("consumer2")
async def test_replay_stops_at_the_limit_oldest_first(redis_client, sync_redis):
    [first, _] = PARTITIONS.all
    for n, stream_id in enumerate(pending(sync_redis, first, 5)):
        await dead_letter(
            redis_client, first, [DeadLetter(stream_id, "invalid_event", f"event {n}")], cap=100
        )

    result = await dead_letters.replay(redis_client, PARTITIONS.all, limit=2)

    assert (result.replayed, result.skipped) == (2, 0)
    # The newest are listed first, and those are what a limited replay takes, oldest of them
    # first into the stream.
    assert [fields[keys.EVENT_FIELD] for _, fields in sync_redis.xrange(first.events)] == [
        "event 3",
        "event 4",
    ]
    left = await dead_letters.read_all(redis_client, first)
    assert [letter.entry for letter in left] == ["event 2", "event 1", "event 0"]


async def test_an_invalid_event_of_a_user_erased_after_it_was_received_is_dropped(
    redis_client, sync_redis, stream, consumer, read_once
):
    def invalid(user: str, **received: float) -> dict[str, str]:
        """An event the gateway would not store today (no item), as an older version did."""
        event = {"event_id": "e", "user_id": user, "type": "view", "ts": 1.0, **received}
        return {keys.EVENT_FIELD: json.dumps(event)}

    in_flight = await stream.add_raw(invalid("gone", received_at=time.time()))
    untimed = await stream.add_raw(invalid("gone"))  # entered the stream before the erasure
    # Stamped by a gateway whose clock runs a minute ahead: its entry's id still tells.
    ahead = await stream.add_raw(invalid("gone", received_at=time.time() + 60))
    await asyncio.sleep(0.002)  # an id names a millisecond: the erasure's is a later one
    neighbour = await stream.add_raw(invalid("stays", received_at=time.time()))
    await Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client).erase("gone")
    later = await stream.add_raw(invalid("gone", received_at=time.time()))  # a new life
    # Not even JSON: no user to check, so it is kept, as every unreadable entry is.
    unreadable = await stream.add_raw({keys.EVENT_FIELD: "gone, not JSON"})

    assert await read_once(consumer) == 6

    kept = {entry["stream_id"] for entry in await stream.dead_letters()}
    assert kept == {neighbour, later, unreadable}
    assert not kept & {in_flight, untimed, ahead}
    stats = sync_redis.hgetall(P0.stats)
    assert (stats["dead_letters"], stats["erased"]) == ("3", "3")
    assert await stream.pending() == 0
