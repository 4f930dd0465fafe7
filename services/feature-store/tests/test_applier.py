"""EventApplier: one Lua script applies a batch to histories and popularity and acknowledges it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from feature_store.applier import ApplyResult, EventApplier
from feature_store.catalogue import Catalogue
from recsys_shared import keys
from recsys_shared.processes import RedisServer
from recsys_shared.redis import create_async_redis
from recsys_shared.schemas import MAX_WEIGHT, EventType, ItemWithId, StoredEvent


async def weights_of(client: aioredis.Redis, user: str) -> dict[str, float]:
    raw = await client.hgetall(keys.user_items(user))
    return {item: float(weight) for item, weight in raw.items()}


async def times_of(client: aioredis.Redis, user: str) -> list[tuple[str, float]]:
    return await client.zrange(keys.user_times(user), 0, -1, withscores=True)


async def test_batch_updates_history_meta_users_popularity_and_acks(
    redis_client, stream, applier, make_event, base_ts
):
    await Catalogue(redis_client).upsert(
        [
            ItemWithId(item_id="i1", title="One", categories=["drama", "comedy"]),
            ItemWithId(item_id="i2", title="Two"),
        ]
    )
    events = [
        make_event("u1", "i1", EventType.VIEW, ts=base_ts),
        make_event("u1", "i2", EventType.CLICK, ts=base_ts + 10),
        make_event("u2", "i1", EventType.PURCHASE, ts=base_ts + 20),
    ]
    entries = await stream.deliver(events)
    assert await stream.pending() == 3

    result = await applier.apply(entries, now=12_345.5)

    assert result == ApplyResult(applied=3, duplicates=0)
    assert await weights_of(redis_client, "u1") == {"i1": 1.0, "i2": 2.0}
    assert await weights_of(redis_client, "u2") == {"i1": 5.0}
    assert await times_of(redis_client, "u1") == [("i1", base_ts), ("i2", base_ts + 10)]
    assert await times_of(redis_client, "u2") == [("i1", base_ts + 20)]
    assert await redis_client.hgetall(keys.user_meta("u1")) == {
        "epoch": "2",
        "updated_at": "12345.5",
    }
    assert await redis_client.hget(keys.user_meta("u2"), "epoch") == "1"
    assert await redis_client.smembers(keys.USERS) == {"u1", "u2"}

    i1 = applier.popularity_increment(events[0]) + applier.popularity_increment(events[2])
    i2 = applier.popularity_increment(events[1])
    assert await redis_client.zscore(keys.POPULAR, "i1") == pytest.approx(i1, rel=1e-12)
    assert await redis_client.zscore(keys.POPULAR, "i2") == pytest.approx(i2, rel=1e-12)
    for category in ("drama", "comedy"):
        assert await redis_client.zrange(keys.popular_in(category), 0, -1, withscores=True) == [
            ("i1", pytest.approx(i1, rel=1e-12))
        ]
    category_sets = [
        name async for name in redis_client.scan_iter(match=keys.POPULAR_CATEGORY_PREFIX + "*")
    ]
    assert sorted(category_sets) == sorted([keys.popular_in("comedy"), keys.popular_in("drama")])

    assert await stream.pending() == 0


async def test_popularity_increment_grows_with_time_and_weight(applier, make_event, base_ts):
    older = make_event("u", "i", EventType.VIEW, ts=base_ts)
    newer = make_event("u", "i", EventType.VIEW, ts=base_ts + 30 * 86_400)
    heavier = make_event("u", "i", EventType.PURCHASE, ts=base_ts)
    # One half-life later an event counts twice as much: old scores decay without rewrites.
    assert applier.popularity_increment(newer) == pytest.approx(
        2 * applier.popularity_increment(older)
    )
    assert applier.popularity_increment(heavier) == pytest.approx(
        5 * applier.popularity_increment(older)
    )


async def test_older_event_never_overwrites_a_newer_time(
    redis_client, stream, applier, make_event, base_ts
):
    newer = make_event("u1", "i1", EventType.VIEW, ts=base_ts + 100)
    older = make_event("u1", "i1", EventType.VIEW, ts=base_ts)
    await applier.apply(await stream.deliver([newer]), now=1.0)
    await applier.apply(await stream.deliver([older]), now=2.0)
    assert await times_of(redis_client, "u1") == [("i1", base_ts + 100)]
    # The older event still counts for the weight and the epoch.
    assert await weights_of(redis_client, "u1") == {"i1": 2.0}
    assert await redis_client.hget(keys.user_meta("u1"), "epoch") == "2"

    latest = make_event("u1", "i1", EventType.VIEW, ts=base_ts + 200)
    await applier.apply(await stream.deliver([latest]), now=3.0)
    assert await times_of(redis_client, "u1") == [("i1", base_ts + 200)]


async def test_older_event_in_the_same_batch_keeps_the_newer_time(
    redis_client, stream, applier, make_event, base_ts
):
    entries = await stream.deliver(
        [
            make_event("u1", "i1", ts=base_ts + 50),
            make_event("u1", "i1", ts=base_ts + 10),
        ]
    )
    await applier.apply(entries, now=1.0)
    assert await times_of(redis_client, "u1") == [("i1", base_ts + 50)]


async def test_redelivered_events_change_nothing_and_count_as_duplicates(
    redis_client, stream, applier, make_event, dump_state
):
    await Catalogue(redis_client).upsert([ItemWithId(item_id="i1", title="t", categories=["c"])])
    entries = await stream.deliver(
        [make_event("u1", "i1", EventType.LIKE), make_event("u2", "i1", EventType.CLICK)]
    )
    assert await applier.apply(entries, now=100.0) == ApplyResult(applied=2, duplicates=0)
    before = await dump_state()

    # Delivered again (e.g. claimed by another replica): only acknowledged, never re-counted,
    # not even the updated_at stamp moves.
    assert await applier.apply(entries, now=200.0) == ApplyResult(applied=0, duplicates=2)

    assert await dump_state() == before
    assert await stream.pending() == 0


async def test_the_same_entry_twice_in_one_batch_applies_once(
    redis_client, stream, applier, make_event
):
    [entry] = await stream.deliver([make_event("u1", "i1", EventType.PURCHASE)])
    assert await applier.apply([entry, entry], now=1.0) == ApplyResult(applied=1, duplicates=1)
    assert await weights_of(redis_client, "u1") == {"i1": 5.0}
    assert await redis_client.hget(keys.user_meta("u1"), "epoch") == "1"
    assert await stream.pending() == 0


async def test_a_partly_redelivered_batch_applies_only_the_new_entries(
    redis_client, stream, applier, make_event
):
    first = await stream.deliver([make_event("u1", "i1", EventType.CLICK)])
    await applier.apply(first, now=1.0)
    second = await stream.deliver([make_event("u1", "i1", EventType.CLICK)])

    assert await applier.apply(first + second, now=2.0) == ApplyResult(applied=1, duplicates=1)

    assert await weights_of(redis_client, "u1") == {"i1": 4.0}
    assert await redis_client.hget(keys.user_meta("u1"), "epoch") == "2"
    assert await stream.pending() == 0


async def test_rating_replaces_the_weight_and_other_types_accumulate_up_to_the_cap(
    redis_client, stream, applier, make_event
):
    async def apply(*events):
        await applier.apply(await stream.deliver(list(events)), now=1.0)
        return (await weights_of(redis_client, "u1"))["i1"]

    assert await apply(make_event("u1", "i1", EventType.VIEW)) == 1.0
    assert await apply(make_event("u1", "i1", EventType.CLICK)) == 3.0
    assert await apply(make_event("u1", "i1", EventType.RATING, value=4.5)) == 2.0
    assert await apply(make_event("u1", "i1", EventType.ADD_TO_CART)) == 5.0
    purchases = [make_event("u1", "i1", EventType.PURCHASE) for _ in range(4)]
    assert await apply(*purchases) == MAX_WEIGHT
    assert await apply(make_event("u1", "i1", EventType.LIKE)) == MAX_WEIGHT
    # A rating replaces even a capped weight, downwards too.
    assert await apply(make_event("u1", "i1", EventType.RATING, value=3.0)) == 0.5


async def test_history_cap_evicts_the_oldest_item_from_times_and_weights(
    redis_client, stream, make_event, base_ts
):
    capped = EventApplier(redis_client, history_cap=3, half_life_days=30)
    first = [make_event("u1", f"i{n}", EventType.CLICK, ts=base_ts + n) for n in (1, 2, 3)]
    await capped.apply(await stream.deliver(first), now=1.0)
    assert [item for item, _ in await times_of(redis_client, "u1")] == ["i1", "i2", "i3"]

    await capped.apply(await stream.deliver([make_event("u1", "i4", ts=base_ts + 4)]), now=2.0)

    assert [item for item, _ in await times_of(redis_client, "u1")] == ["i2", "i3", "i4"]
    assert await weights_of(redis_client, "u1") == {"i2": 2.0, "i3": 2.0, "i4": 1.0}

    # Touching i2 again makes it the newest, so i3 is the next one to go.
    await capped.apply(
        await stream.deliver(
            [make_event("u1", "i2", ts=base_ts + 5), make_event("u1", "i5", ts=base_ts + 6)]
        ),
        now=3.0,
    )
    assert [item for item, _ in await times_of(redis_client, "u1")] == ["i4", "i2", "i5"]
    assert set(await weights_of(redis_client, "u1")) == {"i4", "i2", "i5"}

    # An event older than the whole history is evicted at once, from both structures.
    await capped.apply(await stream.deliver([make_event("u1", "i0", ts=base_ts)]), now=4.0)
    assert [item for item, _ in await times_of(redis_client, "u1")] == ["i4", "i2", "i5"]
    assert set(await weights_of(redis_client, "u1")) == {"i4", "i2", "i5"}


async def test_unavailable_items_get_no_popularity_but_count_as_seen(
    redis_client, stream, applier, make_event
):
    catalogue = Catalogue(redis_client)
    await catalogue.upsert(
        [
            ItemWithId(item_id="off", title="Off", categories=["drama"], available=False),
            ItemWithId(item_id="gone", title="Gone", categories=["drama"]),
            ItemWithId(item_id="on", title="On", categories=["drama"]),
        ]
    )
    assert await catalogue.delete("gone")
    assert await redis_client.smembers(keys.UNAVAILABLE_ITEMS) == {"off", "gone"}

    entries = await stream.deliver(
        [
            make_event("u1", "off", EventType.PURCHASE),
            make_event("u1", "gone", EventType.PURCHASE),
            make_event("u1", "on", EventType.PURCHASE),
        ]
    )
    assert await applier.apply(entries, now=1.0) == ApplyResult(applied=3, duplicates=0)

    assert await weights_of(redis_client, "u1") == {"off": 5.0, "gone": 5.0, "on": 5.0}
    assert await redis_client.zrange(keys.POPULAR, 0, -1) == ["on"]
    assert await redis_client.zrange(keys.popular_in("drama"), 0, -1) == ["on"]


async def test_low_and_neutral_ratings_mark_the_item_seen_without_popularity(
    redis_client, stream, applier, make_event, base_ts
):
    await Catalogue(redis_client).upsert([ItemWithId(item_id="i1", title="t", categories=["c"])])
    entries = await stream.deliver(
        [
            make_event("u1", "i1", EventType.RATING, value=1.0, ts=base_ts),
            make_event("u2", "i1", EventType.RATING, value=2.5, ts=base_ts + 1),
        ]
    )
    assert await applier.apply(entries, now=1.0) == ApplyResult(applied=2, duplicates=0)

    # A low rating is stored as negative evidence; exactly neutral weighs nothing.
    for user, ts, weight in (("u1", base_ts, -1.5), ("u2", base_ts + 1, 0.0)):
        assert await weights_of(redis_client, user) == {"i1": weight}
        assert await times_of(redis_client, user) == [("i1", ts)]
        assert await redis_client.hget(keys.user_meta(user), "epoch") == "1"
    assert await redis_client.smembers(keys.USERS) == {"u1", "u2"}
    assert await redis_client.exists(keys.POPULAR, keys.popular_in("c")) == 0
    assert await stream.pending() == 0


async def test_empty_batch_is_a_no_op(redis_client, applier, dump_state):
    before = await dump_state()
    assert await applier.apply([], now=1.0) == ApplyResult(0, 0)
    assert await dump_state() == before


# ── drift window counters ─────────────────────────────────────────────────────────────────
async def test_applied_events_are_counted_in_the_hour_bucket(
    redis_client, stream, applier, make_event
):
    now = 7_200_000.5  # hour 2000
    hour = keys.drift_hour(now)
    entries = await stream.deliver(
        [
            make_event("u1", "i1", EventType.VIEW),
            make_event("u1", "i2", EventType.CLICK),
            make_event("u2", "i1", EventType.RATING, value=1.0),  # no popularity, still counted
        ]
    )

    await applier.apply(entries, now=now)

    assert hour == 2000
    assert await redis_client.hgetall(keys.drift_items(hour)) == {"i1": "2", "i2": "1"}
    assert await redis_client.hgetall(keys.drift_users(hour)) == {"u1": "2", "u2": "1"}
    assert await redis_client.hgetall(keys.drift_types(hour)) == {
        "view": "1",
        "click": "1",
        "rating": "1",
    }
    assert not await redis_client.exists(keys.drift_hits(hour))
    for name in (keys.drift_items(hour), keys.drift_users(hour), keys.drift_types(hour)):
        assert 0 < await redis_client.ttl(name) <= keys.DRIFT_WINDOW_TTL_SECONDS


async def test_redelivered_events_are_not_counted_twice_in_the_window(
    redis_client, stream, applier, make_event
):
    entries = await stream.deliver([make_event("u1", "i1"), make_event("u2", "i1")])
    await applier.apply(entries, now=3_600.0)
    await applier.apply(entries, now=3_601.0)  # redelivered: acknowledged only
    await applier.apply(entries[:1] + await stream.deliver([make_event("u3", "i2")]), now=3_602.0)

    assert await redis_client.hgetall(keys.drift_items(1)) == {"i1": "2", "i2": "1"}
    assert await redis_client.hgetall(keys.drift_users(1)) == {"u1": "1", "u2": "1", "u3": "1"}
    assert await redis_client.hgetall(keys.drift_types(1)) == {"view": "3"}


async def test_events_from_a_recommendation_count_online_hits_per_version(
    redis_client, stream, applier, make_event
):
    served = {"r1": (["i1", "i2"], 3), "r2": (["i9"], 3), "r3": (["i1"], None)}
    for rec_id, (items, version) in served.items():
        await redis_client.set(
            keys.recommendation(rec_id), json.dumps({"items": items, "model_version": version})
        )

    def attributed(user: str, item: str, rec_id: str) -> StoredEvent:
        return make_event(user, item).model_copy(update={"recommendation_id": rec_id})

    entries = await stream.deliver(
        [
            attributed("u1", "i1", "r1"),  # hit for version 3
            attributed("u1", "i5", "r2"),  # miss for version 3
            attributed("u2", "i1", "r3"),  # hit for the popular fallback
            attributed("u2", "i1", "expired"),  # no record left: not counted
            make_event("u3", "i1"),  # not from a recommendation
        ]
    )

    await applier.apply(entries, now=0.0)
    await applier.apply(entries, now=1.0)  # redelivered: counted once

    assert await redis_client.hgetall(keys.drift_hits(0)) == {
        "3:events": "2",
        "3:hits": "1",
        "popular:events": "1",
        "popular:hits": "1",
    }
    assert await redis_client.hget(keys.drift_types(0), "view") == "5"


@pytest.fixture
async def ephemeral(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, aioredis.Redis]]:
    """A second redis-server, without persistence: where the served-list records are."""
    server = RedisServer(tmp_path / "ephemeral", durable=False).start()
    client = create_async_redis(server.url)
    yield server, client
    await client.aclose()
    server.stop()


async def test_records_on_the_ephemeral_redis_attribute_events(
    redis_client, stream, make_event, ephemeral
):
    _, records = ephemeral
    await records.set(keys.recommendation("r1"), json.dumps({"items": ["i1"], "model_version": 4}))
    await redis_client.set(keys.recommendation("r1"), json.dumps({"items": [], "model_version": 9}))
    applier = EventApplier(redis_client, history_cap=100, half_life_days=30, records=records)
    event = make_event("u1", "i1").model_copy(update={"recommendation_id": "r1"})

    await applier.apply(await stream.deliver([event]), now=0.0)

    # Read where the records live, not on the main Redis.
    assert await redis_client.hgetall(keys.drift_hits(0)) == {"4:events": "1", "4:hits": "1"}


async def test_an_unreachable_ephemeral_redis_leaves_events_applied_unattributed(
    redis_client, stream, make_event, ephemeral
):
    server, records = ephemeral
    applier = EventApplier(redis_client, history_cap=100, half_life_days=30, records=records)
    server.stop()
    event = make_event("u1", "i1").model_copy(update={"recommendation_id": "r1"})

    result = await applier.apply(await stream.deliver([event]), now=0.0)

    assert result.applied == 1
    assert await weights_of(redis_client, "u1") == {"i1": pytest.approx(event.weight)}
    assert await redis_client.hgetall(keys.drift_hits(0)) == {}
