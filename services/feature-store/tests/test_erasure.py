"""Eraser: erasing a user removes everything the data tier and the ephemeral Redis hold of
them, leaving only a tombstone (a digest); retention forgets users who went silent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis

from feature_store.config import Settings
from feature_store.consumer import StreamConsumer, stream_entries
from feature_store.dead_letters import DeadLetter, dead_letter
from feature_store.erasure import FORGET_BATCH, Eraser
from feature_store.housekeeping import Housekeeping
from recsys_shared import keys
from recsys_shared.errors import StoreError
from recsys_shared.processes import RedisServer
from recsys_shared.schemas import EventType
from recsys_shared.testing import eventually

PARTITIONS = keys.Partitions(3)
DAY = 86_400.0
ERASED = "erase-me"
#: A neighbour in the same partition, so that everything the partition holds is shared.
KEPT = next(f"keep-{n}" for n in range(1000) if PARTITIONS.of(f"keep-{n}") == PARTITIONS.of(ERASED))
OTHER = next(
    f"other-{n}" for n in range(1000) if PARTITIONS.of(f"other-{n}") != PARTITIONS.of(ERASED)
)


@pytest.fixture
def ephemeral_inspector(ephemeral_server: RedisServer) -> Iterator[redis.Redis]:
    with ephemeral_server.inspector() as client:
        yield client


@pytest.fixture
def eraser(redis_client, ephemeral) -> Eraser:
    return Eraser(redis_client, PARTITIONS, ephemeral=ephemeral)


@pytest.fixture
def settings3(settings: Settings) -> Settings:
    return settings.model_copy(update={"event_partitions": PARTITIONS.count})


def everything_in(client: redis.Redis) -> str:
    """Every key name, field, member and value of a Redis, as one text to search."""
    texts: list[str] = []
    for name in client.scan_iter(count=1000):
        texts.append(name)
        kind = client.type(name)
        if kind == "hash":
            texts += [part for pair in client.hgetall(name).items() for part in pair]
        elif kind == "zset":
            texts += client.zrange(name, 0, -1)
        elif kind == "set":
            texts += list(client.smembers(name))
        elif kind == "string":
            value = client.get(name)
            texts.append(value if isinstance(value, str) else "")
        elif kind == "stream":
            texts += [
                part
                for _, fields in client.xrange(name)
                for pair in fields.items()
                for part in pair
            ]
    return "\n".join(texts)


async def invalid_events(redis_client, partition: keys.Partition, *entries: str) -> None:
    """Dead letters of refused events with these raw entries in ``partition``: each read through
    the group first (only a pending entry is dead-lettered), then trimmed, as once acknowledged."""
    try:
        await redis_client.execute(
            "XGROUP", "CREATE", partition.events, keys.EVENTS_GROUP, "$", "MKSTREAM"
        )
    except StoreError as error:
        if error.code != "BUSYGROUP":
            raise
    for entry in entries:
        await redis_client.execute("XADD", partition.events, "*", keys.EVENT_FIELD, entry)
    reply = await redis_client.execute(
        "XREADGROUP", "GROUP", keys.EVENTS_GROUP, "refuser", "COUNT", len(entries),
        "STREAMS", partition.events, ">",
    )  # fmt: skip
    ids = [stream_id for stream_id, _ in stream_entries(reply, partition.events)]
    letters = [
        DeadLetter(stream_id, "invalid_event", entry)
        for stream_id, entry in zip(ids, entries, strict=True)
    ]
    await dead_letter(redis_client, partition, letters, cap=100)
    await redis_client.execute("XDEL", partition.events, *ids)


async def fill(redis_client, sync_redis, settings3, make_event, user: str, ephemeral) -> None:
    """A user as the system leaves them: events applied (and trimmed), idempotency markers,
    drift counts, dead letters naming them, the nonce of their cached lists."""
    partition = PARTITIONS.of(user)
    consumer = StreamConsumer(redis_client, settings3, records=ephemeral)
    await consumer.ensure_group(partition)
    for item, kind in (("i1", EventType.LIKE), ("i2", EventType.VIEW)):
        sync_redis.xadd(
            partition.events, {keys.EVENT_FIELD: make_event(user, item, kind).model_dump_json()}
        )
    await consumer.readers[partition.number].read_once(redis_client)
    housekeeping = Housekeeping(
        redis_client, settings3, consumer, Eraser(redis_client, PARTITIONS, ephemeral=redis_client)
    )
    await housekeeping.trim()
    sync_redis.set(partition.markers(user), b"\x01" * keys.MARKER_BYTES)
    await invalid_events(
        redis_client,
        partition,
        f'{{"user_id": "{user}", "item_id": "i9"}}',
        f"not json at all, from {user}",
    )


def cache_entries(client: redis.Redis, user: str) -> None:
    """What the gateway and the recommenders keep of a user on the ephemeral Redis."""
    lists = {keys.cache_field("-", "q1"): "cached list", keys.cache_field("b", "q2"): "cached list"}
    client.hset(keys.cached_lists(PARTITIONS.of(user), user), mapping=lists)
    client.set(keys.recommendation(user, "r1"), "served list")


async def test_erasure_removes_every_trace_of_the_user_and_leaves_only_a_digest(
    redis_client, sync_redis, settings3, make_event, eraser, ephemeral, ephemeral_inspector
):
    for user in (ERASED, KEPT, OTHER):
        await fill(redis_client, sync_redis, settings3, make_event, user, ephemeral)
        cache_entries(ephemeral_inspector, user)
    ephemeral_inspector.set(keys.recommendation(None, "r9"), "similar items, nobody's")
    assert ERASED in everything_in(sync_redis)
    assert ERASED in everything_in(ephemeral_inspector)

    await eraser.erase(ERASED)

    assert ERASED not in everything_in(sync_redis)
    assert ERASED not in everything_in(ephemeral_inspector)
    # A tombstone holds a digest of the id and when, never the id itself.
    partition = PARTITIONS.of(ERASED)
    tombstones = sync_redis.hgetall(partition.erased)
    assert set(tombstones) == {keys.user_digest(ERASED)}
    assert float(tombstones[keys.user_digest(ERASED)]) == pytest.approx(time.time(), abs=60)
    assert sync_redis.get(keys.DATA_GENERATION) == "1"
    # Everyone else is untouched, their dead letters included.
    for user in (KEPT, OTHER):
        home = PARTITIONS.of(user)
        assert sync_redis.exists(*home.user_keys(user)) == 4
        assert sync_redis.zscore(home.users, user) is not None
        assert len(sync_redis.xrange(home.dead_letters)) == 2
        assert len(list(ephemeral_inspector.scan_iter(match=f"*{user}*"))) == 2
    assert ephemeral_inspector.exists(keys.recommendation(None, "r9"))


async def test_erasure_is_idempotent_and_only_a_user_with_data_starts_a_new_generation(
    redis_client, sync_redis, settings3, make_event, eraser, ephemeral
):
    await fill(redis_client, sync_redis, settings3, make_event, ERASED, ephemeral)
    await eraser.erase(ERASED)
    assert sync_redis.get(keys.DATA_GENERATION) == "1"

    await eraser.erase(ERASED)
    await eraser.erase("never-seen")

    # Nothing left to change in a snapshot: no new generation, no pointless retraining …
    assert sync_redis.get(keys.DATA_GENERATION) == "1"
    # … but a tombstone all the same: the first events of a new user may be in flight.
    assert sync_redis.hexists(PARTITIONS.of("never-seen").erased, keys.user_digest("never-seen"))
    assert set(await eraser.tombstones()) == {
        keys.user_digest(ERASED),
        keys.user_digest("never-seen"),
    }


async def test_erasure_reaches_the_dead_letters_of_a_user_with_nothing_else(
    redis_client, sync_redis, eraser
):
    # Every event the user sent was refused: no features, only dead letters.
    partition = PARTITIONS.of(ERASED)
    await invalid_events(
        redis_client, partition, f'{{"user_id": "{ERASED}"}}', f'{{"user_id": "{KEPT}"}}'
    )

    await eraser.erase(ERASED)

    [(_, kept)] = sync_redis.xrange(partition.dead_letters)
    assert KEPT in kept["entry"]
    assert sync_redis.get(keys.DATA_GENERATION) is None


async def test_erasure_matches_the_users_cached_lists_exactly(eraser, ephemeral_inspector):
    # Ids with glob characters, and ids that begin with another id.
    for user in ("fan*", "fanx", "fan", "fan*2", "[x]", "x"):
        cache_entries(ephemeral_inspector, user)

    await eraser.erase("fan*")
    await eraser.erase("[x]")

    left = set(ephemeral_inspector.scan_iter())
    for user in ("fanx", "fan", "fan*2", "x"):
        assert keys.cached_lists(PARTITIONS.of(user), user) in left
        assert keys.recommendation(user, "r1") in left
    assert len(left) == 4 * 2


async def test_lists_stored_just_after_the_erasure_are_swept_once_more(
    redis_client, ephemeral, ephemeral_inspector
):
    eraser = Eraser(redis_client, PARTITIONS, ephemeral=ephemeral, resweep_seconds=0.2)
    await eraser.erase(ERASED)
    # A list ranked from features read just before the erasure, stored once it answered.
    cache_entries(ephemeral_inspector, ERASED)
    cache_entries(ephemeral_inspector, KEPT)

    await eventually(lambda: _nothing_of(ephemeral_inspector, ERASED), within=5)
    assert len(list(ephemeral_inspector.scan_iter(match=f"*{KEPT}*"))) == 2
    await eraser.aclose()


async def test_closing_cancels_the_second_sweeps_still_waiting(redis_client, ephemeral):
    eraser = Eraser(redis_client, PARTITIONS, ephemeral=ephemeral, resweep_seconds=3600)
    await eraser.erase(ERASED)
    assert _sweeps_waiting() == 1

    await eraser.aclose()  # returns now, not in an hour

    assert _sweeps_waiting() == 0


def _sweeps_waiting() -> int:
    return sum(
        1
        for task in asyncio.all_tasks()
        if task.get_name() == "erasure-resweep" and not task.done()
    )


async def _nothing_of(client: redis.Redis, user: str) -> bool:
    return user not in everything_in(client)


# ── retention ─────────────────────────────────────────────────────────────────────────────
async def test_retention_forgets_only_users_silent_for_the_period(
    redis_client, sync_redis, stream, applier, make_event
):
    eraser = Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client)
    [partition] = keys.Partitions(1).all
    now = time.time()
    retention = 365 * DAY
    entries = await stream.deliver(
        [
            make_event("silent", "i1", received_at=now - retention - DAY),
            make_event("also-silent", "i1", received_at=now - retention - 60),
            make_event("recent", "i1", received_at=now - retention + DAY),
            # An old event received lately: the clock is the receipt, not the event's time.
            make_event("late-sender", "i1", ts=now - 2 * retention, received_at=now - 60),
        ]
    )
    await applier.apply(partition, entries, now=now)
    await invalid_events(redis_client, partition, '{"user_id": "silent"}')
    for user in ("silent", "also-silent", "recent", "late-sender"):
        sync_redis.hset(keys.cached_lists(partition, user), keys.cache_field("-", "q"), "list")

    assert await eraser.forget_silent(partition, retention_seconds=retention) == 2

    assert sync_redis.zrange(partition.users, 0, -1) == ["recent", "late-sender"]
    for user in ("silent", "also-silent"):
        assert (
            sync_redis.exists(*partition.user_keys(user), keys.cached_lists(partition, user)) == 0
        )
    for user in ("recent", "late-sender"):
        kept = (partition.user_items(user), partition.user_meta(user))
        assert sync_redis.exists(*kept, keys.cached_lists(partition, user)) == 3
    assert sync_redis.xlen(partition.dead_letters) == 0
    drift_users = sync_redis.hgetall(partition.drift(keys.drift_hour(now)).users)
    assert set(drift_users) == {"recent", "late-sender"}
    assert sync_redis.exists(partition.erased) == 0  # forgetting leaves no tombstone
    assert sync_redis.get(keys.DATA_GENERATION) == "1"

    assert await eraser.forget_silent(partition, retention_seconds=retention) == 0
    assert sync_redis.get(keys.DATA_GENERATION) == "1"


async def test_retention_works_through_many_silent_users_in_batches(redis_client, sync_redis):
    eraser = Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client)
    [partition] = keys.Partitions(1).all
    old = time.time() - 400 * DAY
    silent = {f"u{n}": old + n for n in range(2 * FORGET_BATCH + 50)}
    with sync_redis.pipeline(transaction=False) as pipe:
        pipe.zadd(partition.users, silent)
        for user in silent:
            pipe.hset(partition.user_items(user), "i1", 1)
        pipe.zadd(partition.users, {"recent": time.time()})
        pipe.execute()

    assert await eraser.forget_silent(partition, retention_seconds=365 * DAY) == len(silent)

    assert sync_redis.zrange(partition.users, 0, -1) == ["recent"]
    assert list(sync_redis.scan_iter(match=partition.user_prefix + "*")) == []


async def test_old_tombstones_are_pruned(redis_client, sync_redis):
    eraser = Eraser(redis_client, PARTITIONS, ephemeral=redis_client)
    first, second, _ = PARTITIONS.all
    now = time.time()
    sync_redis.hset(first.erased, mapping={"old": now - 31 * DAY, "young": now - DAY})
    sync_redis.hset(second.erased, mapping={"older": now - 90 * DAY})

    assert await eraser.prune_tombstones(first, keep_seconds=30 * DAY) == 1
    assert await eraser.prune_tombstones(second, keep_seconds=30 * DAY) == 1

    assert await eraser.tombstones() == {"young": pytest.approx(now - DAY)}
