"""EventApplier: one Lua script applies a partition's batch to histories and popularity and
acknowledges it."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from feature_store.applier import ApplyResult, EventApplier, min_max_ids
from feature_store.catalogue import Catalogue
from feature_store.erasure import Eraser
from feature_store.merger import PopularityMerger
from recsys_shared import keys
from recsys_shared.experiments.assignment import group
from recsys_shared.experiments.lists import ExperimentLists
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import MAX_WEIGHT, EventType, ItemWithId, ServedList, StoredEvent

P0 = keys.Partitions(1).all[0]


def weights_of(client: redis.Redis, user: str, partition: keys.Partition = P0) -> dict[str, float]:
    raw = client.hgetall(partition.user_items(user))
    return {item: float(weight) for item, weight in raw.items()}


def times_of(
    client: redis.Redis, user: str, partition: keys.Partition = P0
) -> list[tuple[str, float]]:
    return client.zrange(partition.user_times(user), 0, -1, withscores=True)


def users_of(client: redis.Redis, partition: keys.Partition = P0) -> set[str]:
    return set(client.zrange(partition.users, 0, -1))


async def merge_popularity(client: RedisClient, partitions: keys.Partitions) -> None:
    """What the merger does in the background: sum every partition into the merged sets."""
    merger = PopularityMerger(client, partitions, full_every_seconds=600)
    await merger.merge(await merger._every_item())


async def test_batch_updates_history_meta_users_popularity_and_acks(
    redis_client, sync_redis, stream, applier, make_event, base_ts
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

    result = await applier.apply(P0, entries, now=12_345.5)

    assert result == ApplyResult(applied=3, duplicates=0)
    assert weights_of(sync_redis, "u1") == {"i1": 1.0, "i2": 2.0}
    assert weights_of(sync_redis, "u2") == {"i1": 5.0}
    assert times_of(sync_redis, "u1") == [("i1", base_ts), ("i2", base_ts + 10)]
    assert times_of(sync_redis, "u2") == [("i1", base_ts + 20)]
    assert sync_redis.hgetall(P0.user_meta("u1")) == {"epoch": "2", "updated_at": "12345.5"}
    assert sync_redis.hget(P0.user_meta("u2"), "epoch") == "1"
    # Who exists, scored by when their latest event was received (the retention clock).
    assert sync_redis.zrange(P0.users, 0, -1, withscores=True) == [
        ("u1", pytest.approx(events[1].received_at)),
        ("u2", pytest.approx(events[2].received_at)),
    ]

    # Popularity lands in the partition's own set, the items marked for the merger …
    i1 = applier.popularity_increment(events[0]) + applier.popularity_increment(events[2])
    i2 = applier.popularity_increment(events[1])
    assert sync_redis.zscore(P0.popular, "i1") == pytest.approx(i1, rel=1e-12)
    assert sync_redis.zscore(P0.popular, "i2") == pytest.approx(i2, rel=1e-12)
    assert sync_redis.smembers(P0.popular_dirty) == {"i1", "i2"}
    assert not sync_redis.exists(keys.POPULAR)

    # … and serving reads the merged sets, categories included.
    await merge_popularity(redis_client, keys.Partitions(1))
    assert sync_redis.zscore(keys.POPULAR, "i1") == pytest.approx(i1, rel=1e-12)
    assert sync_redis.zscore(keys.POPULAR, "i2") == pytest.approx(i2, rel=1e-12)
    for category in ("drama", "comedy"):
        assert sync_redis.zrange(keys.popular_in(category), 0, -1, withscores=True) == [
            ("i1", pytest.approx(i1, rel=1e-12))
        ]
    category_sets = list(sync_redis.scan_iter(match=keys.POPULAR_CATEGORY_PREFIX + "*"))
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


async def test_events_decades_old_keep_their_popularity_and_its_order(
    redis_client, sync_redis, stream, applier, make_event
):
    # The demo's MovieLens ratings are from 1996-2016: decayed, they weigh 2^-hundreds, which a
    # store printing fixed decimals (HINCRBYFLOAT: 17 of them) would keep as 0.
    old = 852_076_800.0  # 1997-01-01
    events = [
        make_event("u1", "twice", EventType.VIEW, ts=old),
        make_event("u2", "twice", EventType.VIEW, ts=old),
        make_event("u3", "once", EventType.VIEW, ts=old),
    ]
    await applier.apply(P0, await stream.deliver(events), now=time.time())
    await merge_popularity(redis_client, keys.Partitions(1))

    (top, top_score), (second, second_score) = sync_redis.zrange(
        keys.POPULAR, 0, -1, desc=True, withscores=True
    )
    assert (top, second) == ("twice", "once")
    assert second_score > 0
    assert top_score == pytest.approx(2 * second_score, rel=1e-12)


async def test_older_event_never_overwrites_a_newer_time(
    sync_redis, stream, applier, make_event, base_ts
):
    newer = make_event("u1", "i1", EventType.VIEW, ts=base_ts + 100)
    older = make_event("u1", "i1", EventType.VIEW, ts=base_ts)
    await applier.apply(P0, await stream.deliver([newer]), now=1.0)
    await applier.apply(P0, await stream.deliver([older]), now=2.0)
    assert times_of(sync_redis, "u1") == [("i1", base_ts + 100)]
    # The older event still counts for the weight and the epoch.
    assert weights_of(sync_redis, "u1") == {"i1": 2.0}
    assert sync_redis.hget(P0.user_meta("u1"), "epoch") == "2"

    latest = make_event("u1", "i1", EventType.VIEW, ts=base_ts + 200)
    await applier.apply(P0, await stream.deliver([latest]), now=3.0)
    assert times_of(sync_redis, "u1") == [("i1", base_ts + 200)]


async def test_older_event_in_the_same_batch_keeps_the_newer_time(
    sync_redis, stream, applier, make_event, base_ts
):
    entries = await stream.deliver(
        [
            make_event("u1", "i1", ts=base_ts + 50),
            make_event("u1", "i1", ts=base_ts + 10),
        ]
    )
    await applier.apply(P0, entries, now=1.0)
    assert times_of(sync_redis, "u1") == [("i1", base_ts + 50)]


async def test_redelivered_events_change_nothing_and_count_as_duplicates(
    redis_client, sync_redis, stream, applier, make_event, dump_state
):
    await Catalogue(redis_client).upsert([ItemWithId(item_id="i1", title="t", categories=["c"])])
    entries = await stream.deliver(
        [make_event("u1", "i1", EventType.LIKE), make_event("u2", "i1", EventType.CLICK)]
    )
    assert await applier.apply(P0, entries, now=100.0) == ApplyResult(applied=2, duplicates=0)
    before = await dump_state()

    # Delivered again (e.g. claimed by another replica): only acknowledged, never re-counted,
    # not even the updated_at stamp moves.
    assert await applier.apply(P0, entries, now=200.0) == ApplyResult(applied=0, duplicates=2)

    assert await dump_state() == before
    assert await stream.pending() == 0
    assert sync_redis.hgetall(P0.stats) == {"applied": "2", "redelivered": "2"}


async def test_the_same_entry_twice_in_one_batch_applies_once(
    sync_redis, stream, applier, make_event
):
    [entry] = await stream.deliver([make_event("u1", "i1", EventType.PURCHASE)])
    assert await applier.apply(P0, [entry, entry], now=1.0) == ApplyResult(applied=1, duplicates=1)
    assert weights_of(sync_redis, "u1") == {"i1": 5.0}
    assert sync_redis.hget(P0.user_meta("u1"), "epoch") == "1"
    assert await stream.pending() == 0


async def test_a_partly_redelivered_batch_applies_only_the_new_entries(
    sync_redis, stream, applier, make_event
):
    first = await stream.deliver([make_event("u1", "i1", EventType.CLICK)])
    await applier.apply(P0, first, now=1.0)
    second = await stream.deliver([make_event("u1", "i1", EventType.CLICK)])

    assert await applier.apply(P0, first + second, now=2.0) == ApplyResult(applied=1, duplicates=1)

    assert weights_of(sync_redis, "u1") == {"i1": 4.0}
    assert sync_redis.hget(P0.user_meta("u1"), "epoch") == "2"
    assert await stream.pending() == 0


async def test_a_batch_in_any_order_applies_every_entry_once(
    sync_redis, stream, applier, make_event
):
    entries = await stream.deliver([make_event(f"u{n}", "i1", EventType.CLICK) for n in range(5)])

    result = await applier.apply(P0, list(reversed(entries)), now=1.0)

    assert result == ApplyResult(applied=5, duplicates=0)
    assert await stream.pending() == 0


async def test_a_batch_spanning_many_other_pending_entries_applies_exactly_once(
    sync_redis, stream, applier, make_event
):
    # Another consumer holds 300 entries between this batch's first and last: more than the
    # script looks at in one XPENDING, so it falls back to one XACK per entry.
    entries = await stream.deliver(
        [make_event(f"u{n}", "i1", EventType.CLICK) for n in range(300)], consumer="other"
    )
    mine = [entries[0], entries[-1]]

    assert await applier.apply(P0, mine, now=1.0) == ApplyResult(applied=2, duplicates=0)
    assert await applier.apply(P0, mine, now=2.0) == ApplyResult(applied=0, duplicates=2)

    assert weights_of(sync_redis, "u0") == {"i1": 2.0}
    assert weights_of(sync_redis, "u299") == {"i1": 2.0}
    assert not sync_redis.exists(P0.user_items("u1"))
    assert await stream.pending() == 298


def test_min_max_ids_compare_stream_ids_by_their_numbers() -> None:
    # As text, "10-0" < "9-5" and "9-10" < "9-5"; as stream ids, neither.
    assert min_max_ids(["9-10", "10-0", "9-5"]) == ("9-5", "10-0")


async def test_rating_replaces_the_weight_and_other_types_accumulate_up_to_the_cap(
    sync_redis, stream, applier, make_event
):
    async def apply(*events):
        await applier.apply(P0, await stream.deliver(list(events)), now=1.0)
        return weights_of(sync_redis, "u1")["i1"]

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
    redis_client, sync_redis, stream, make_event, base_ts
):
    capped = EventApplier(redis_client, history_cap=3, half_life_days=30)
    first = [make_event("u1", f"i{n}", EventType.CLICK, ts=base_ts + n) for n in (1, 2, 3)]
    await capped.apply(P0, await stream.deliver(first), now=1.0)
    assert [item for item, _ in times_of(sync_redis, "u1")] == ["i1", "i2", "i3"]

    await capped.apply(P0, await stream.deliver([make_event("u1", "i4", ts=base_ts + 4)]), now=2.0)

    assert [item for item, _ in times_of(sync_redis, "u1")] == ["i2", "i3", "i4"]
    assert weights_of(sync_redis, "u1") == {"i2": 2.0, "i3": 2.0, "i4": 1.0}

    # Touching i2 again makes it the newest, so i3 is the next one to go.
    await capped.apply(
        P0,
        await stream.deliver(
            [make_event("u1", "i2", ts=base_ts + 5), make_event("u1", "i5", ts=base_ts + 6)]
        ),
        now=3.0,
    )
    assert [item for item, _ in times_of(sync_redis, "u1")] == ["i4", "i2", "i5"]
    assert set(weights_of(sync_redis, "u1")) == {"i4", "i2", "i5"}

    # An event older than the whole history is evicted at once, from both structures.
    await capped.apply(P0, await stream.deliver([make_event("u1", "i0", ts=base_ts)]), now=4.0)
    assert [item for item, _ in times_of(sync_redis, "u1")] == ["i4", "i2", "i5"]
    assert set(weights_of(sync_redis, "u1")) == {"i4", "i2", "i5"}


async def test_unavailable_items_get_no_popularity_but_count_as_seen(
    redis_client, sync_redis, stream, applier, make_event
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
    assert sync_redis.smembers(keys.UNAVAILABLE_ITEMS) == {"off", "gone"}

    entries = await stream.deliver(
        [
            make_event("u1", "off", EventType.PURCHASE),
            make_event("u1", "gone", EventType.PURCHASE),
            make_event("u1", "on", EventType.PURCHASE),
        ]
    )
    assert await applier.apply(P0, entries, now=1.0) == ApplyResult(applied=3, duplicates=0)
    await merge_popularity(redis_client, keys.Partitions(1))

    assert weights_of(sync_redis, "u1") == {"off": 5.0, "gone": 5.0, "on": 5.0}
    # What serving reads leaves them out (the partition keeps counting, should one come back).
    assert sync_redis.zrange(keys.POPULAR, 0, -1) == ["on"]
    assert sync_redis.zrange(keys.popular_in("drama"), 0, -1) == ["on"]


async def test_low_and_neutral_ratings_mark_the_item_seen_without_popularity(
    redis_client, sync_redis, stream, applier, make_event, base_ts
):
    await Catalogue(redis_client).upsert([ItemWithId(item_id="i1", title="t", categories=["c"])])
    entries = await stream.deliver(
        [
            make_event("u1", "i1", EventType.RATING, value=1.0, ts=base_ts),
            make_event("u2", "i1", EventType.RATING, value=2.5, ts=base_ts + 1),
        ]
    )
    assert await applier.apply(P0, entries, now=1.0) == ApplyResult(applied=2, duplicates=0)
    await merge_popularity(redis_client, keys.Partitions(1))

    # A low rating is stored as negative evidence; exactly neutral weighs nothing.
    for user, ts, weight in (("u1", base_ts, -1.5), ("u2", base_ts + 1, 0.0)):
        assert weights_of(sync_redis, user) == {"i1": weight}
        assert times_of(sync_redis, user) == [("i1", ts)]
        assert sync_redis.hget(P0.user_meta(user), "epoch") == "1"
    assert users_of(sync_redis) == {"u1", "u2"}
    assert sync_redis.exists(P0.popular, P0.popular_dirty) == 0
    assert sync_redis.exists(keys.POPULAR, keys.popular_in("c")) == 0
    assert await stream.pending() == 0


async def test_empty_batch_is_a_no_op(applier, dump_state):
    before = await dump_state()
    assert await applier.apply(P0, [], now=1.0) == ApplyResult(0, 0)
    assert await dump_state() == before


# ── partitions ────────────────────────────────────────────────────────────────────────────
def users_in_every_partition(partitions: keys.Partitions, per_partition: int) -> list[str]:
    """User ids that land ``per_partition`` in each partition (found by the partition hash)."""
    found: dict[int, list[str]] = {partition.number: [] for partition in partitions.all}
    for number in range(10_000):
        user = f"user-{number}"
        chosen = found[partitions.of(user).number]
        if len(chosen) < per_partition:
            chosen.append(user)
        if all(len(users) == per_partition for users in found.values()):
            break
    return [user for users in found.values() for user in users]


async def test_each_partition_applies_its_users_into_its_own_keys_only(
    redis_client, sync_redis, make_stream, applier, make_event, dump_state
):
    partitions = keys.Partitions(4)
    users = users_in_every_partition(partitions, per_partition=2)
    streams = {partition.number: await make_stream(partition) for partition in partitions.all}
    delivered = {
        partition.number: await streams[partition.number].deliver(
            [
                make_event(user, item, EventType.CLICK)
                for user in users
                if partitions.of(user) == partition
                for item in ("shared", f"own-{user}")
            ]
        )
        for partition in partitions.all
    }
    chosen = partitions.all[2]
    before = await dump_state()

    result = await applier.apply(chosen, delivered[chosen.number], now=1.0)

    assert result == ApplyResult(applied=4, duplicates=0)
    after = await dump_state()
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert changed
    assert all(name.startswith(chosen.base + ":") for name in changed), changed
    for partition in partitions.all:
        expected = 0 if partition == chosen else 4
        assert await streams[partition.number].pending() == expected

    for partition in partitions.all:
        if partition != chosen:
            await applier.apply(partition, delivered[partition.number], now=1.0)
    for user in users:
        home = partitions.of(user)
        assert weights_of(sync_redis, user, home) == {"shared": 2.0, f"own-{user}": 2.0}
        assert user in users_of(sync_redis, home)
        # No partition but the user's own holds anything of the user.
        assert {name.split("}")[0] for name in sync_redis.scan_iter(match=f"*:u:{user}:*")} == {
            home.base.split("}")[0]
        }
    # The shared item's popularity is counted where each event landed, summed when merged.
    per_partition = [sync_redis.zscore(partition.popular, "shared") for partition in partitions.all]
    assert all(score and score > 0 for score in per_partition)
    await merge_popularity(redis_client, partitions)
    assert sync_redis.zscore(keys.POPULAR, "shared") == pytest.approx(sum(per_partition))

    # Redelivered in every partition: acknowledged only, counted as duplicates, nothing moves.
    settled = await dump_state()
    for partition in partitions.all:
        assert await applier.apply(partition, delivered[partition.number], now=2.0) == (
            ApplyResult(applied=0, duplicates=4)
        )
    assert await dump_state() == settled
    for partition in partitions.all:
        assert sync_redis.hgetall(partition.stats) == {"applied": "4", "redelivered": "4"}


async def test_an_event_received_before_its_users_erasure_is_dropped_and_one_after_applied(
    redis_client, sync_redis, stream, applier, make_event
):
    eraser = Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client)
    sent_before = make_event("u1", "old", EventType.PURCHASE)
    other_user = make_event("u2", "old", EventType.PURCHASE)
    in_flight = await stream.deliver([sent_before, other_user])
    await eraser.erase("u1")
    sent_after = make_event("u1", "new", EventType.CLICK)
    assert sent_after.received_at > sent_before.received_at

    later = await stream.deliver([sent_after])
    result = await applier.apply(P0, in_flight + later, now=time.time())

    assert result == ApplyResult(applied=2, duplicates=0, erased=1)
    assert weights_of(sync_redis, "u1") == {"new": 2.0}
    assert weights_of(sync_redis, "u2") == {"old": 5.0}
    assert sync_redis.hget(P0.user_meta("u1"), "epoch") == "1"
    assert sync_redis.zscore(P0.popular, "old") == pytest.approx(
        applier.popularity_increment(other_user)
    )
    assert sync_redis.hget(P0.stats, "erased") == "1"
    assert await stream.pending() == 0  # the dropped event is acknowledged too


class SkewedClock:
    """A host's clock ``skew`` seconds off the Redis server's (this machine's)."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew


@pytest.mark.parametrize(
    ("gateway_skew", "feature_store_skew"),
    [(60.0, 0.0), (0.0, -60.0)],
    ids=["gateway-clock-ahead", "feature-store-clock-behind"],
)
async def test_an_event_that_entered_before_the_erasure_is_dropped_whatever_the_hosts_clocks(
    redis_client, sync_redis, stream, applier, make_event, monkeypatch, gateway_skew,
    feature_store_skew,
):  # fmt: skip
    """The gateway stamps ``received_at`` and the feature-store erases by their own clocks; a
    minute of skew either way still drops an event that was in the stream before the erasure
    (the tombstone and the entry's id both come from the partition's Redis)."""
    monkeypatch.setattr("feature_store.erasure.time", SkewedClock(feature_store_skew))
    eraser = Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client)
    sent_before = make_event("u1", "old", received_at=time.time() + gateway_skew)
    in_flight = await stream.deliver([sent_before])
    await asyncio.sleep(0.002)  # an id names a millisecond: the erasure's is a later one
    await eraser.erase("u1")

    result = await applier.apply(P0, in_flight, now=time.time())

    assert result == ApplyResult(applied=0, duplicates=0, erased=1)
    assert weights_of(sync_redis, "u1") == {}
    assert "u1" not in users_of(sync_redis)


# ── drift window counters ─────────────────────────────────────────────────────────────────
async def test_applied_events_are_counted_in_the_hour_bucket(
    sync_redis, stream, applier, make_event
):
    now = 7_200_000.5  # hour 2000
    hour = keys.drift_hour(now)
    bucket = P0.drift(hour)
    entries = await stream.deliver(
        [
            make_event("u1", "i1", EventType.VIEW),
            make_event("u1", "i2", EventType.CLICK),
            make_event("u2", "i1", EventType.RATING, value=1.0),  # no popularity, still counted
        ]
    )

    await applier.apply(P0, entries, now=now)

    assert hour == 2000
    assert sync_redis.hgetall(bucket.items) == {"i1": "2", "i2": "1"}
    assert sync_redis.hgetall(bucket.users) == {"u1": "2", "u2": "1"}
    assert sync_redis.hgetall(bucket.types) == {"view": "1", "click": "1", "rating": "1"}
    assert not sync_redis.exists(bucket.hits)
    for name in (bucket.items, bucket.users, bucket.types):
        assert 0 < sync_redis.ttl(name) <= keys.DRIFT_WINDOW_TTL_SECONDS


async def test_redelivered_events_are_not_counted_twice_in_the_window(
    sync_redis, stream, applier, make_event
):
    entries = await stream.deliver([make_event("u1", "i1"), make_event("u2", "i1")])
    await applier.apply(P0, entries, now=3_600.0)
    await applier.apply(P0, entries, now=3_601.0)  # redelivered: acknowledged only
    await applier.apply(
        P0, entries[:1] + await stream.deliver([make_event("u3", "i2")]), now=3_602.0
    )

    bucket = P0.drift(1)
    assert sync_redis.hgetall(bucket.items) == {"i1": "2", "i2": "1"}
    assert sync_redis.hgetall(bucket.users) == {"u1": "1", "u2": "1", "u3": "1"}
    assert sync_redis.hgetall(bucket.types) == {"view": "3"}


def served_list(user_id: str | None, items: list[str], version: int | None) -> str:
    return ServedList(
        user_id=user_id,
        items=items,
        model_version=version,
        strategy="personalized" if version is not None else "popular",
        served_at=time.time(),
    ).model_dump_json()


async def test_events_from_a_recommendation_count_online_hits_per_version(
    sync_redis, stream, applier, make_event
):
    records = {
        keys.recommendation("u1", "r1"): served_list("u1", ["i1", "i2"], 3),
        keys.recommendation("u1", "r2"): served_list("u1", ["i9"], 3),
        keys.recommendation("u2", "r3"): served_list("u2", ["i1"], None),
        keys.recommendation(None, "r4"): served_list(None, ["i7"], 5),  # similar items
        keys.recommendation("u1", "r5"): '{"not": "a served list"}',
    }
    sync_redis.mset(records)

    def attributed(user: str, item: str, rec_id: str) -> StoredEvent:
        return make_event(user, item).model_copy(update={"recommendation_id": rec_id})

    entries = await stream.deliver(
        [
            attributed("u1", "i1", "r1"),  # hit for version 3
            attributed("u1", "i5", "r2"),  # miss for version 3
            attributed("u2", "i1", "r3"),  # hit for the popular fallback
            attributed("u2", "i7", "r4"),  # hit for version 5, served to nobody in particular
            attributed("u2", "i1", "expired"),  # no record left: not counted
            attributed("u3", "i1", "r1"),  # another user's list: not theirs to count
            attributed("u1", "i1", "r5"),  # a record that does not parse: not counted
            make_event("u3", "i1"),  # not from a recommendation
        ]
    )

    await applier.apply(P0, entries, now=0.0)
    await applier.apply(P0, entries, now=1.0)  # redelivered: counted once

    assert sync_redis.hgetall(P0.drift(0).hits) == {
        "3:events": "2",
        "3:hits": "1",
        "5:events": "1",
        "5:hits": "1",
        "popular:events": "1",
        "popular:hits": "1",
    }
    assert sync_redis.hget(P0.drift(0).types, "view") == "8"


async def test_records_on_the_ephemeral_redis_attribute_events(
    redis_client, sync_redis, stream, make_event, ephemeral_server, ephemeral
):
    record = keys.recommendation("u1", "r1")
    with redis.Redis.from_url(ephemeral_server.url) as records:
        records.set(record, served_list("u1", ["i1"], 4))
    sync_redis.set(record, served_list("u1", [], 9))
    applier = EventApplier(redis_client, history_cap=100, half_life_days=30, records=ephemeral)
    event = make_event("u1", "i1").model_copy(update={"recommendation_id": "r1"})

    await applier.apply(P0, await stream.deliver([event]), now=0.0)

    # Read where the records live, not on the main Redis.
    assert sync_redis.hgetall(P0.drift(0).hits) == {"4:events": "1", "4:hits": "1"}


@pytest.mark.parametrize("connected_before", [True, False])
async def test_an_unreachable_ephemeral_redis_leaves_events_applied_unattributed(
    redis_client, sync_redis, stream, make_event, ephemeral_server, ephemeral, connected_before
):
    applier = EventApplier(redis_client, history_cap=100, half_life_days=30, records=ephemeral)
    if connected_before:  # lost while in use; else down since the client was made
        assert await ephemeral.ping()
    ephemeral_server.stop()
    event = make_event("u1", "i1").model_copy(update={"recommendation_id": "r1"})

    result = await applier.apply(P0, await stream.deliver([event]), now=0.0)

    assert result.applied == 1
    assert weights_of(sync_redis, "u1") == {"i1": pytest.approx(event.weight)}
    assert sync_redis.hgetall(P0.drift(0).hits) == {}


# ── experiments: attribution to variants, exactly once ─────────────────────────────────────
def experiment_list(user: str, items: list[str], version: int, variant: str) -> str:
    return ServedList(
        user_id=user,
        items=items,
        model_version=version,
        strategy="personalized",
        served_at=time.time(),
        experiment="7",
        variant=variant,
    ).model_dump_json()


async def test_experiment_lists_attribute_events_to_variants_once_however_redelivered(
    redis_client, sync_redis, stream, make_event
):
    lists = ExperimentLists(redis_client, keys.Partitions(1))
    served = {  # recommendation id → (user, items, version, variant)
        "r1.7": ("u1", ["i1", "i2"], 3, "control"),
        "r2.7": ("u2", ["i3"], 4, "canary"),
    }
    for rid, (user, items, version, variant) in served.items():
        await lists.record(user, "7", [(rid, experiment_list(user, items, version, variant))])
    # The shadow ranked u1's request too.
    await lists.record(
        "u1", "7", [("r1.7:shadow", experiment_list("u1", ["i2", "i9"], 5, "shadow"))]
    )
    applier = EventApplier(redis_client, history_cap=100, half_life_days=30, experiment_lists=lists)

    def on(user: str, item: str, rid: str, kind: str = "click") -> StoredEvent:
        return make_event(user, item, kind).model_copy(update={"recommendation_id": rid})

    entries = await stream.deliver(
        [
            on("u1", "i1", "r1.7"),  # control: a click; the shadow's list lacks i1
            on("u1", "i2", "r1.7", "purchase"),  # control: a conversion; a shadow hit
            on("u1", "i7", "r1.7"),  # control: an event off the list
            on("u2", "i3", "r2.7", "purchase"),  # canary: a conversion
            on("u3", "i1", "r1.7"),  # another user's list: not theirs to count
            on("u2", "i3", "gone.7"),  # no such list (expired): not counted
        ]
    )
    events, clicks, conversions = keys.VARIANT_EVENTS, keys.VARIANT_CLICKS, keys.VARIANT_CONVERSIONS

    def counter(variant: str, user: str, suffix: str) -> str:  # under the user's group
        return keys.variant_counter(variant, group("7", user), suffix)

    expected = {
        counter("control", "u1", events): "3",
        counter("control", "u1", clicks): "2",
        counter("control", "u1", conversions): "1",
        counter("shadow", "u1", events): "3",
        counter("shadow", "u1", clicks): "1",
        counter("shadow", "u1", conversions): "1",
        counter("canary", "u2", events): "1",
        counter("canary", "u2", clicks): "1",
        counter("canary", "u2", conversions): "1",
    }

    assert (await applier.apply(P0, entries, now=0.0)).applied == 6
    assert sync_redis.hgetall(P0.experiment("7")) == expected

    # Redelivered: by the same reader after a crash, and claimed by another replica.
    assert (await applier.apply(P0, entries, now=1.0)).duplicates == 6
    claimed = await stream.deliver([on("u2", "i3", "r2.7")], consumer="slow")
    sync_redis.xclaim(P0.events, keys.EVENTS_GROUP, "fast", 0, [claimed[0][0]])
    assert (await applier.apply(P0, claimed, now=2.0)).applied == 1  # the claimer applies it
    assert (await applier.apply(P0, claimed, now=3.0)).duplicates == 1  # the slow one wakes up
    expected.update({counter("canary", "u2", events): "2", counter("canary", "u2", clicks): "2"})
    assert sync_redis.hgetall(P0.experiment("7")) == expected
    # Counted on the data tier with the features, never on records that may be shed.
    assert sync_redis.hgetall(P0.drift(0).hits) == {
        "3:events": "3",
        "3:hits": "2",
        "4:events": "2",
        "4:hits": "2",
    }


async def test_a_list_ranked_before_its_users_erasure_is_not_kept(redis_client, sync_redis):
    lists = ExperimentLists(redis_client, keys.Partitions(1))
    ranked_at = time.time()
    await Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client).erase("u1")
    await lists.record(
        "u1", "7", [("r1.7", experiment_list("u1", ["i1"], 3, "control"))], ranked_at=ranked_at
    )
    assert sync_redis.exists(P0.user_lists("u1")) == 0
    await lists.record("u1", "7", [("r2.7", experiment_list("u1", ["i1"], 3, "control"))])
    assert sync_redis.hkeys(P0.user_lists("u1")) == ["r2.7"]  # served after: kept
    await Eraser(redis_client, keys.Partitions(1), ephemeral=redis_client).erase("u1")
    assert sync_redis.exists(P0.user_lists("u1")) == 0
