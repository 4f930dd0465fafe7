"""PopularityMerger: sums each item's popularity over the partitions into the merged sets that
serving reads, leaving unavailable items out and filling the category sets."""

from __future__ import annotations

import pytest

from feature_store.catalogue import Catalogue
from feature_store.merger import PopularityMerger
from recsys_shared import keys
from recsys_shared.locks import RedisLock
from recsys_shared.schemas import ItemWithId

PARTITIONS = keys.Partitions(3)


@pytest.fixture
async def merger(redis_client) -> PopularityMerger:
    """A merger past its first pass (a full one, at start): the next passes take dirty items."""
    merger = PopularityMerger(redis_client, PARTITIONS, full_every_seconds=3600)
    assert await merger.run_once() == 0
    return merger


def earn(client, scores: dict[str, list[float]]) -> None:
    """Popularity as the apply script leaves it: per partition, the item marked dirty."""
    for item, per_partition in scores.items():
        for partition, score in zip(PARTITIONS.all, per_partition, strict=True):
            if score:
                client.zincrby(partition.popular, score, item)
                client.sadd(partition.popular_dirty, item)


async def test_scores_are_summed_over_the_partitions(sync_redis, merger):
    earn(sync_redis, {"a": [1.0, 2.0, 3.0], "b": [0.0, 0.5, 0.0], "c": [4.0, 0.0, 0.0]})

    assert await merger.run_once() == 3

    assert sync_redis.zrange(keys.POPULAR, 0, -1, withscores=True) == [
        ("b", 0.5),
        ("c", 4.0),
        ("a", 6.0),
    ]
    for partition in PARTITIONS.all:
        assert sync_redis.exists(partition.popular_dirty) == 0
    assert sync_redis.get(keys.POPULARITY_MERGE_LOCK) is None  # released


async def test_unavailable_items_are_left_out_and_categories_filled(
    redis_client, sync_redis, merger
):
    await Catalogue(redis_client).upsert(
        [
            ItemWithId(item_id="sf", title="Alien", categories=["Science Fiction", "Horror"]),
            ItemWithId(item_id="diy", title="Saw", categories=["Home & Garden: Tools"]),
            ItemWithId(item_id="off", title="Gone", categories=["Horror"], available=False),
        ]
    )
    earn(sync_redis, {"sf": [1.0, 1.0, 0.0], "diy": [0.0, 0.0, 2.5], "off": [9.0, 0.0, 0.0]})

    await merger.run_once()

    assert sync_redis.zrange(keys.POPULAR, 0, -1, withscores=True) == [("sf", 2.0), ("diy", 2.5)]
    assert sync_redis.zrange(keys.popular_in("Science Fiction"), 0, -1, withscores=True) == [
        ("sf", 2.0)
    ]
    assert sync_redis.zrange(keys.popular_in("Horror"), 0, -1) == ["sf"]
    assert sync_redis.zrange(keys.popular_in("Home & Garden: Tools"), 0, -1) == ["diy"]
    assert not sync_redis.exists(keys.popular_in("Science"))
    # The partitions keep counting an unavailable item, should it come back.
    assert sync_redis.zscore(PARTITIONS.all[0].popular, "off") == 9.0


async def test_a_dirty_item_is_merged_again_and_the_rest_waits_for_a_full_pass(
    redis_client, sync_redis, merger
):
    earn(sync_redis, {"a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0]})
    await merger.run_once()

    earn(sync_redis, {"a": [0.0, 2.0, 0.0]})  # new events: marked dirty
    sync_redis.zincrby(PARTITIONS.all[2].popular, 5.0, "b")  # a change left unmarked (a crash)
    assert await merger.run_once() == 1

    assert sync_redis.zscore(keys.POPULAR, "a") == 3.0
    assert sync_redis.zscore(keys.POPULAR, "b") == 1.0

    due = PopularityMerger(redis_client, PARTITIONS, full_every_seconds=3600)
    assert await due.run_once() == 2  # a new replica's first pass is a full one: repaired
    assert sync_redis.zscore(keys.POPULAR, "b") == 6.0


async def test_an_item_available_again_is_merged_back(redis_client, sync_redis, merger):
    catalogue = Catalogue(redis_client)
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["Film Noir"])])
    earn(sync_redis, {"i1": [1.5, 0.0, 1.5]})
    await merger.run_once()
    await catalogue.upsert(
        [ItemWithId(item_id="i1", title="t", categories=["Film Noir"], available=False)]
    )
    assert sync_redis.zscore(keys.POPULAR, "i1") is None

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["Film Noir"])])
    assert await merger.run_once() == 1  # marked dirty by the catalogue

    assert sync_redis.zscore(keys.POPULAR, "i1") == 3.0
    assert sync_redis.zscore(keys.popular_in("Film Noir"), "i1") == 3.0


async def test_an_item_with_nothing_left_leaves_the_merged_sets(redis_client, sync_redis, merger):
    await Catalogue(redis_client).upsert([ItemWithId(item_id="i1", title="t", categories=["c"])])
    earn(sync_redis, {"i1": [1.0, 0.0, 0.0]})
    await merger.run_once()
    assert sync_redis.zscore(keys.popular_in("c"), "i1") == 1.0

    sync_redis.zrem(PARTITIONS.all[0].popular, "i1")  # e.g. a deleted item forgotten
    sync_redis.sadd(keys.POPULAR_DIRTY, "i1")
    await merger.run_once()

    assert sync_redis.exists(keys.POPULAR, keys.popular_in("c")) == 0


async def test_only_one_replica_merges_at_a_time(redis_client, sync_redis, merger):
    earn(sync_redis, {"a": [1.0, 0.0, 0.0]})
    other_replica = RedisLock(redis_client, keys.POPULARITY_MERGE_LOCK, ttl_seconds=30)
    assert await other_replica.acquire()

    assert await merger.run_once() == 0

    assert sync_redis.exists(keys.POPULAR) == 0
    assert sync_redis.smembers(PARTITIONS.all[0].popular_dirty) == {"a"}  # left for the holder
