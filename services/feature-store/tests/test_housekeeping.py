"""Housekeeping: claims what a dead consumer left, trims only what every group applied, and
keeps the data tier bounded (gone consumers, deleted items, silent users, old tombstones)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from feature_store.applier import ApplyResult
from feature_store.catalogue import Catalogue
from feature_store.consumer import StreamConsumer
from feature_store.erasure import Eraser
from feature_store.housekeeping import Housekeeping
from recsys_shared import keys
from recsys_shared.locks import RedisLock
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import EventType, ItemWithId, StoredEvent, TrainingData
from recsys_shared.testing import in_background, model_info

P0 = keys.Partitions(1).all[0]
DAY = 86_400.0


def failures_counted(job: str) -> float:
    value = REGISTRY.get_sample_value("recsys_housekeeping_failures_total", {"job": job})
    return value or 0.0


def applied_items(client, user: str) -> dict[str, float]:
    return {item: float(weight) for item, weight in client.hgetall(P0.user_items(user)).items()}


# ── claiming ──────────────────────────────────────────────────────────────────────────────
async def test_claim_stalled_takes_over_entries_a_dead_consumer_left_pending(
    redis_client, sync_redis, consumer, housekeeping, settings, stream, make_event
):
    events = [make_event(f"u{n}", "i1", EventType.PURCHASE) for n in range(3)]
    for event in events:
        await stream.add(event)
    assert len(await stream.read("dead")) == 3  # delivered, then the consumer died
    assert len(await stream.pending_ids("dead")) == 3

    patient_settings = settings.model_copy(update={"consumer_name": "c2", "claim_idle_ms": 60_000})
    patient = Housekeeping(
        redis_client,
        patient_settings,
        StreamConsumer(redis_client, patient_settings),
        housekeeping.eraser,
    )
    assert await patient.claim_stalled() == 0  # not idle long enough yet
    assert len(await stream.pending_ids("dead")) == 3
    assert await stream.pending_ids("c2") == []

    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await housekeeping.claim_stalled() == 3

    for n in range(3):
        assert applied_items(sync_redis, f"u{n}") == {"i1": 5.0}
    assert await stream.pending() == 0
    assert sync_redis.hget(P0.stats, "applied") == "3"
    # Nothing is left to claim.
    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await housekeeping.claim_stalled() == 0


async def test_a_slow_consumer_racing_its_claimer_does_not_apply_twice(
    sync_redis, housekeeping, settings, stream, make_event, applier, dump_state
):
    # "slow" reads a batch and stalls past the claim time; c1 claims and applies it; then "slow"
    # wakes up and applies its copy of the same entries.
    for n in range(2):
        await stream.add(make_event(f"u{n}", "i1", EventType.LIKE))
    slow_batch = [
        (stream_id, StoredEvent.model_validate_json(fields[keys.EVENT_FIELD]))
        for stream_id, fields in await stream.read("slow")
    ]
    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.05)
    assert await housekeeping.claim_stalled() == 2
    after_claim = await dump_state()

    assert await applier.apply(P0, slow_batch, now=999.0) == ApplyResult(applied=0, duplicates=2)

    assert await dump_state() == after_claim
    for n in range(2):
        assert applied_items(sync_redis, f"u{n}") == {"i1": 4.0}
        assert sync_redis.hget(P0.user_meta(f"u{n}"), "epoch") == "1"
    assert await stream.pending() == 0


# ── trimming ──────────────────────────────────────────────────────────────────────────────
async def test_trim_drops_only_entries_every_group_has_applied(
    consumer, housekeeping, stream, make_event, read_once
):
    applied_early = [await stream.add(make_event("u1", f"a{n}")) for n in range(4)]
    assert await read_once(consumer) == 4
    stuck = await stream.add(make_event("u2", "s"))
    await stream.read("dead")  # delivered to a consumer that never acknowledges
    after = [await stream.add(make_event("u3", f"b{n}")) for n in range(2)]
    assert await read_once(consumer) == 2
    assert await stream.pending_ids() == [stuck]

    await housekeeping.trim()

    remaining = await stream.ids()
    assert remaining == [stuck, *after]
    assert not set(applied_early) & set(remaining)

    # Once the stuck entry is claimed and applied, everything may go.
    await asyncio.sleep(consumer.settings.claim_idle_ms / 1000 + 0.05)
    assert await housekeeping.claim_stalled() == 1
    await housekeeping.trim()
    assert await stream.ids() == []


async def test_trim_keeps_what_another_group_has_not_read(
    sync_redis, consumer, housekeeping, stream, make_event, read_once
):
    await stream.add(make_event("u1", "i1"))
    sync_redis.xgroup_create(P0.events, "another-group", id="0")
    await stream.add(make_event("u1", "i2"))
    assert await read_once(consumer) == 2

    await housekeeping.trim()

    assert sync_redis.xlen(P0.events) == 2


async def test_trim_without_a_stream_or_group_does_nothing(
    redis_client, sync_redis, settings, make_event
):
    consumer = StreamConsumer(redis_client, settings)
    eraser = Eraser(redis_client, settings.partitions, ephemeral=redis_client)
    housekeeping = Housekeeping(redis_client, settings, consumer, eraser)
    await housekeeping.trim()  # no stream at all
    sync_redis.xadd(P0.events, {keys.EVENT_FIELD: make_event("u", "i").model_dump_json()})
    await housekeeping.trim()  # a stream nobody consumes yet
    assert sync_redis.xlen(P0.events) == 1


# ── consumers that are gone ───────────────────────────────────────────────────────────────
def consumer_names(client) -> set[str]:
    return {entry["name"] for entry in client.xinfo_consumers(P0.events, keys.EVENTS_GROUP)}


async def test_consumers_silent_for_the_forget_period_with_nothing_pending_are_forgotten(
    redis_client, sync_redis, settings, stream, make_event
):
    settings = settings.model_copy(update={"consumer_forget_seconds": 0.3})
    consumer = StreamConsumer(redis_client, settings)
    eraser = Eraser(redis_client, settings.partitions, ephemeral=redis_client)
    housekeeping = Housekeeping(redis_client, settings, consumer, eraser)
    for name in ("c1", "gone"):  # ourselves, and a replica that left with nothing pending
        sync_redis.xgroup_createconsumer(P0.events, keys.EVENTS_GROUP, name)
    await stream.add(make_event("u1", "i1"))
    await stream.read("crashed")  # left with an entry pending: kept until it is claimed
    for name in ("c1", "gone", "crashed"):
        sync_redis.hset(P0.heartbeats, name, repr(time.time()))
    await asyncio.sleep(0.4)
    sync_redis.xgroup_createconsumer(P0.events, keys.EVENTS_GROUP, "fresh")  # just started
    sync_redis.hset(P0.heartbeats, "fresh", repr(time.time()))
    assert consumer_names(sync_redis) == {"c1", "gone", "crashed", "fresh"}

    await housekeeping.forget_gone_consumers(P0)

    assert consumer_names(sync_redis) == {"c1", "crashed", "fresh"}
    assert set(sync_redis.hgetall(P0.heartbeats)) == {"c1", "crashed", "fresh"}
    assert len(await stream.pending_ids("crashed")) == 1


# ── deleted items ─────────────────────────────────────────────────────────────────────────
@pytest.fixture
async def deleted_long_ago(redis_client, sync_redis, settings) -> float:
    """Items "old" (deleted longer ago than the retention: when is returned), "recent"
    (deleted just now) and "kept", in the popularity sets and in two users' histories."""
    catalogue = Catalogue(redis_client)
    await catalogue.upsert(
        [ItemWithId(item_id=item, title=item) for item in ("old", "recent", "kept")]
    )
    for popular in (P0.popular, keys.POPULAR):
        sync_redis.zadd(popular, {"old": 1.0, "recent": 2.0, "kept": 3.0})
    for user in ("u1", "u2"):
        sync_redis.hset(P0.user_items(user), mapping={"old": 1, "recent": 1, "kept": 1})
        sync_redis.zadd(P0.user_times(user), {"old": 1.0, "recent": 2.0, "kept": 3.0})
        sync_redis.zadd(P0.users, {user: time.time()})
    assert await catalogue.delete("old")
    assert await catalogue.delete("recent")
    deleted_at = time.time() - settings.deleted_item_retention_days * DAY - 60
    sync_redis.zadd(keys.DELETED_ITEMS, {"old": deleted_at}, xx=True)
    return deleted_at


async def test_deleted_items_are_forgotten_once_their_retention_has_passed(
    sync_redis, housekeeping, deleted_long_ago
):
    await housekeeping.forget_deleted_items()

    assert sync_redis.zrange(keys.DELETED_ITEMS, 0, -1) == ["recent"]
    assert sync_redis.smembers(keys.UNAVAILABLE_ITEMS) == {"recent"}
    assert sync_redis.zrange(P0.popular, 0, -1) == ["recent", "kept"]
    assert sync_redis.zrange(keys.POPULAR, 0, -1) == ["kept"]
    # Out of every history first: a snapshot taken after it cannot bring it back.
    for user in ("u1", "u2"):
        assert set(sync_redis.hgetall(P0.user_items(user))) == {"recent", "kept"}
        assert sync_redis.zrange(P0.user_times(user), 0, -1) == ["recent", "kept"]


async def test_a_deleted_item_is_kept_while_a_model_that_knows_it_can_be_activated(
    redis_client, sync_redis, housekeeping, deleted_long_ago
):
    registry = ModelRegistry(redis_client)
    before = TrainingData(snapshot_created_at=deleted_long_ago - DAY)
    after = TrainingData(snapshot_created_at=deleted_long_ago + DAY)
    await registry.publish(model_info(1, data=before), reason="trained before the deletion")
    await registry.publish(model_info(2, data=after), reason="trained after it")

    await housekeeping.forget_deleted_items()

    # Version 1 could be activated again (a rollback): "old" stays unavailable, kept out.
    assert set(sync_redis.zrange(keys.DELETED_ITEMS, 0, -1)) == {"old", "recent"}
    assert "old" in sync_redis.hgetall(P0.user_items("u1"))

    await registry.drop_artifact(1)  # pruned: it can no longer be activated
    await housekeeping.forget_deleted_items()

    assert sync_redis.zrange(keys.DELETED_ITEMS, 0, -1) == ["recent"]
    assert "old" not in sync_redis.hgetall(P0.user_items("u1"))


# ── the slow pass and the loop ────────────────────────────────────────────────────────────
async def test_the_slow_pass_forgets_silent_users_and_old_tombstones(
    redis_client, sync_redis, housekeeping, settings, stream, applier, make_event
):
    now = time.time()
    retention = settings.user_retention_days * DAY
    entries = await stream.deliver(
        [
            make_event("silent", "i1", received_at=now - retention - 60),
            make_event("active", "i1", received_at=now - 60),
        ]
    )
    await applier.apply(P0, entries, now=now)
    keep = settings.erasure_tombstone_days * DAY
    sync_redis.hset(P0.erased, mapping={"old-digest": now - keep - 60, "new-digest": now - 60})

    await housekeeping.slow_pass()

    assert sync_redis.zrange(P0.users, 0, -1) == ["active"]
    assert sync_redis.exists(*P0.user_keys("silent")) == 0
    assert applied_items(sync_redis, "active") == {"i1": 1.0}
    assert set(sync_redis.hgetall(P0.erased)) == {"new-digest"}
    assert sync_redis.get(keys.HOUSEKEEPING_LOCK) is None  # released


async def test_the_slow_pass_is_done_by_one_replica_at_a_time(
    redis_client, sync_redis, housekeeping, settings, stream, applier, make_event
):
    retention = settings.user_retention_days * DAY
    entries = await stream.deliver(
        [make_event("silent", "i1", received_at=time.time() - retention - 60)]
    )
    await applier.apply(P0, entries, now=time.time())
    other_replica = RedisLock(redis_client, keys.HOUSEKEEPING_LOCK, ttl_seconds=60)
    assert await other_replica.acquire()

    await housekeeping.slow_pass()

    assert sync_redis.zrange(P0.users, 0, -1) == ["silent"]
    assert await other_replica.holder() == other_replica.token


async def test_a_failing_job_does_not_stop_the_others(
    redis_client, sync_redis, housekeeping, eventually
):
    # The stream is not a stream (a broken deployment): claiming and trimming fail each tick.
    sync_redis.set(P0.events, "not a stream")
    sync_redis.zadd(P0.popular, {"i1": 2.0})
    sync_redis.sadd(P0.popular_dirty, "i1")
    failed_before = {job: failures_counted(job) for job in ("claim", "trim")}
    async with in_background(housekeeping.run()) as task:

        async def merged() -> bool:
            return sync_redis.zscore(keys.POPULAR, "i1") == 2.0

        await eventually(merged)
        await asyncio.sleep(0.3)
        assert not task.done()
        for job, before in failed_before.items():
            assert failures_counted(job) > before
