"""Dead letters: what cannot be applied is kept per partition with its reason, listed by reason,
capped, and replayed into its partition's stream."""

from __future__ import annotations

import asyncio
import json

import pytest

from feature_store import dead_letters
from feature_store.config import Settings
from feature_store.consumer import StreamConsumer
from feature_store.dead_letters import DeadLetter, dead_letter
from recsys_shared import keys
from recsys_shared.schemas import EventType

PARTITIONS = keys.Partitions(2)


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


async def test_dead_letters_are_listed_newest_first_and_counted_by_reason(redis_client):
    first, second = PARTITIONS.all
    # A millisecond apart: a dead letter's time is its stream id's, and two partitions' letters
    # within one millisecond are simultaneous (either order would be right).
    await dead_letter(
        redis_client, first, [DeadLetter("1-1", "invalid_event", "bad", "no JSON")], cap=100
    )
    await asyncio.sleep(0.002)
    await dead_letter(redis_client, second, [DeadLetter("2-1", "entry_deleted", "")], cap=100)
    await asyncio.sleep(0.002)
    await dead_letter(
        redis_client, first, [DeadLetter("1-2", "invalid_event", "worse", "no JSON")], cap=100
    )

    everything = await dead_letters.list_dead_letters(redis_client, PARTITIONS.all)
    assert everything.total == 3
    assert everything.by_reason == {"invalid_event": 2, "entry_deleted": 1}
    assert [letter.stream_id for letter in everything.entries] == ["1-2", "2-1", "1-1"]
    assert [letter.partition for letter in everything.entries] == [0, 1, 0]

    invalid = await dead_letters.list_dead_letters(
        redis_client, PARTITIONS.all, reason="invalid_event", limit=1
    )
    assert invalid.total == 3  # the totals always count every dead letter
    assert [(letter.stream_id, letter.entry, letter.detail) for letter in invalid.entries] == [
        ("1-2", "worse", "no JSON")
    ]
    none = await dead_letters.list_dead_letters(redis_client, PARTITIONS.all, reason="other")
    assert none.entries == []


async def test_each_partitions_dead_letters_are_capped_oldest_first(redis_client, sync_redis):
    first, second = PARTITIONS.all
    cap = 100
    for batch in range(10):
        letters = [
            DeadLetter(f"{batch}-{n}", "invalid_event", f"entry {batch}-{n}") for n in range(100)
        ]
        await dead_letter(redis_client, first, letters, cap=cap)
    await dead_letter(redis_client, second, [DeadLetter("9-9", "invalid_event", "x")], cap=cap)

    kept = sync_redis.xrange(first.dead_letters)
    # Trimmed in whole stream nodes (MAXLEN ~): at least the cap, far below the 1000 written.
    assert cap <= len(kept) < 2 * cap
    assert kept[-1][1]["stream_id"] == "9-99"  # the newest stay
    assert "0-0" not in {fields["stream_id"] for _, fields in kept}  # the oldest went first
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
    await dead_letter(
        redis_client, second, [DeadLetter("1-1", "invalid_event", fixed.model_dump_json())], cap=100
    )
    await dead_letter(redis_client, first, [DeadLetter("1-2", "invalid_event", "garbage")], cap=100)
    await dead_letter(redis_client, first, [DeadLetter("1-3", "entry_deleted", "")], cap=100)

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


async def test_replay_stops_at_the_limit_oldest_first(redis_client, sync_redis):
    [first, _] = PARTITIONS.all
    for n in range(5):
        await dead_letter(
            redis_client, first, [DeadLetter(f"1-{n}", "invalid_event", f"event {n}")], cap=100
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
