"""Catalogue: item writes keep the hash, category sets, popularity and availability in step."""

from __future__ import annotations

import json

import pytest

from feature_store.catalogue import Catalogue
from feature_store.merger import PopularityMerger
from recsys_shared import keys
from recsys_shared.schemas import EventType, ItemPatch, ItemWithId

P0 = keys.Partitions(1).all[0]


@pytest.fixture
def catalogue(redis_client) -> Catalogue:
    return Catalogue(redis_client)


def version(client) -> int:
    return int(client.get(keys.CATALOGUE_VERSION) or 0)


async def test_upsert_stores_items_and_bumps_the_version(sync_redis, catalogue):
    await catalogue.upsert(
        [
            ItemWithId(
                item_id="i1", title="Toy Story (1995)", categories=["kids", "comedy", "kids"]
            ),
            ItemWithId(item_id="i2", title="Heat", available=False),
        ]
    )

    one = sync_redis.hgetall(keys.item("i1"))
    assert one["title"] == "Toy Story (1995)"
    assert json.loads(one["categories"]) == ["comedy", "kids"]  # sorted, unique
    assert one["available"] == "1"
    assert one["updated_at"]
    two = sync_redis.hgetall(keys.item("i2"))
    assert (two["title"], json.loads(two["categories"]), two["available"]) == ("Heat", [], "0")
    assert sync_redis.smembers(keys.ITEMS) == {"i1", "i2"}
    assert sync_redis.smembers(keys.category_items("kids")) == {"i1"}
    assert sync_redis.smembers(keys.category_items("comedy")) == {"i1"}
    assert sync_redis.smembers(keys.UNAVAILABLE_ITEMS) == {"i2"}
    assert version(sync_redis) == 2

    await catalogue.upsert([ItemWithId(item_id="i1", title="Toy Story", categories=["kids"])])
    assert sync_redis.hget(keys.item("i1"), "title") == "Toy Story"
    assert version(sync_redis) == 3


async def test_changing_categories_moves_the_item_and_its_popularity(sync_redis, catalogue):
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a", "b"])])
    sync_redis.zadd(keys.POPULAR, {"i1": 7.5})
    sync_redis.zadd(keys.popular_in("a"), {"i1": 7.5})
    sync_redis.zadd(keys.popular_in("b"), {"i1": 7.5})

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["b", "c"])])

    assert sync_redis.smembers(keys.category_items("a")) == set()
    assert sync_redis.smembers(keys.category_items("b")) == {"i1"}
    assert sync_redis.smembers(keys.category_items("c")) == {"i1"}
    assert sync_redis.zscore(keys.popular_in("a"), "i1") is None
    assert sync_redis.zscore(keys.popular_in("b"), "i1") == 7.5
    assert sync_redis.zscore(keys.popular_in("c"), "i1") == 7.5
    assert sync_redis.zscore(keys.POPULAR, "i1") == 7.5
    assert json.loads(sync_redis.hget(keys.item("i1"), "categories")) == ["b", "c"]


async def test_popularity_earned_by_events_follows_a_category_change(
    redis_client, sync_redis, catalogue, stream, applier, make_event
):
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a"])])
    await applier.apply(
        P0, await stream.deliver([make_event("u1", "i1", EventType.PURCHASE)]), now=1.0
    )
    merger = PopularityMerger(redis_client, keys.Partitions(1), full_every_seconds=600)
    await merger.run_once()
    score = sync_redis.zscore(keys.POPULAR, "i1")
    assert score is not None
    assert score > 0
    assert sync_redis.zscore(keys.popular_in("a"), "i1") == score

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["z"])])

    assert sync_redis.zscore(keys.popular_in("a"), "i1") is None
    assert sync_redis.zscore(keys.popular_in("z"), "i1") == score


async def test_unavailable_item_leaves_every_popular_list(sync_redis, catalogue):
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a", "b"])])
    sync_redis.zadd(keys.POPULAR, {"i1": 3.0, "other": 1.0})
    sync_redis.zadd(keys.popular_in("a"), {"i1": 3.0, "other": 1.0})
    sync_redis.zadd(keys.popular_in("b"), {"i1": 3.0})

    await catalogue.upsert(
        [ItemWithId(item_id="i1", title="t", categories=["a", "b"], available=False)]
    )

    assert sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert sync_redis.zrange(keys.POPULAR, 0, -1) == ["other"]
    assert sync_redis.zrange(keys.popular_in("a"), 0, -1) == ["other"]
    assert sync_redis.zscore(keys.popular_in("b"), "i1") is None
    # Still in the catalogue and its categories, only not recommendable.
    assert sync_redis.hget(keys.item("i1"), "available") == "0"
    assert sync_redis.smembers(keys.category_items("a")) == {"i1"}

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a", "b"])])
    assert not sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert sync_redis.hget(keys.item("i1"), "available") == "1"
    # Available again: marked for the merger, which puts its summed popularity back.
    assert sync_redis.sismember(keys.POPULAR_DIRTY, "i1")


async def test_delete_removes_the_item_and_keeps_it_unavailable(sync_redis, catalogue):
    await catalogue.upsert(
        [
            ItemWithId(item_id="i1", title="t", categories=["a"]),
            ItemWithId(item_id="i2", title="u", categories=["a"]),
        ]
    )
    sync_redis.zadd(keys.POPULAR, {"i1": 2.0, "i2": 1.0})
    sync_redis.zadd(keys.popular_in("a"), {"i1": 2.0, "i2": 1.0})
    before = version(sync_redis)

    assert await catalogue.delete("i1") is True

    assert sync_redis.exists(keys.item("i1")) == 0
    assert sync_redis.smembers(keys.ITEMS) == {"i2"}
    assert sync_redis.smembers(keys.category_items("a")) == {"i2"}
    assert sync_redis.smembers(keys.UNAVAILABLE_ITEMS) == {"i1"}
    assert sync_redis.zrange(keys.POPULAR, 0, -1) == ["i2"]
    assert sync_redis.zrange(keys.popular_in("a"), 0, -1) == ["i2"]
    assert version(sync_redis) == before + 1
    # Remembered as deleted, for the retention that forgets it later.
    assert sync_redis.zscore(keys.DELETED_ITEMS, "i1") is not None

    assert await catalogue.delete("i1") is False  # already gone
    assert sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert await catalogue.delete("never-existed") is False


async def test_deleting_an_unknown_item_changes_nothing(sync_redis, catalogue):
    before = version(sync_redis)
    assert await catalogue.delete("never-seen") is False
    assert version(sync_redis) == before
    assert not sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "never-seen")


# ── patch ─────────────────────────────────────────────────────────────────────────────────
async def test_patch_changes_only_the_fields_given(sync_redis, catalogue, stored_item):
    await catalogue.upsert([ItemWithId(item_id="i1", title="Heat", categories=["Crime"])])
    sync_redis.zadd(keys.POPULAR, {"i1": 4.0})
    sync_redis.zadd(keys.popular_in("Crime"), {"i1": 4.0})
    before = version(sync_redis)

    assert await catalogue.patch("i1", ItemPatch(available=False)) is True

    assert stored_item("i1") == ("Heat", ["Crime"], "0")
    assert sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert sync_redis.zscore(keys.POPULAR, "i1") is None
    assert sync_redis.zscore(keys.popular_in("Crime"), "i1") is None
    assert version(sync_redis) == before + 1

    assert await catalogue.patch("i1", ItemPatch(title="Heat (1995)")) is True
    assert stored_item("i1") == ("Heat (1995)", ["Crime"], "0")


async def test_patch_moves_categories_with_spaces_and_punctuation(sync_redis, catalogue):
    await catalogue.upsert([ItemWithId(item_id="i1", title="Alien", categories=["Horror"])])
    sync_redis.zadd(keys.POPULAR, {"i1": 2.5})
    sync_redis.zadd(keys.popular_in("Horror"), {"i1": 2.5})
    categories = ["Science Fiction", "Home & Garden: Tools", "(no genres listed)"]

    assert await catalogue.patch("i1", ItemPatch(categories=categories)) is True

    assert json.loads(sync_redis.hget(keys.item("i1"), "categories")) == sorted(categories)
    assert sync_redis.hget(keys.item("i1"), "title") == "Alien"
    assert sync_redis.smembers(keys.category_items("Horror")) == set()
    assert sync_redis.zscore(keys.popular_in("Horror"), "i1") is None
    for category in categories:
        assert sync_redis.smembers(keys.category_items(category)) == {"i1"}
        assert sync_redis.zscore(keys.popular_in(category), "i1") == 2.5
    # Each category is its own key, whole: no partial name matches another.
    assert not sync_redis.exists(keys.category_items("Science"))


async def test_patch_of_an_unknown_item_changes_nothing(catalogue, dump_state):
    before = await dump_state()
    assert await catalogue.patch("nope", ItemPatch(available=True)) is False
    assert await dump_state() == before


def removals(client) -> int:
    return int(client.get(keys.CATALOGUE_REMOVALS) or 0)


async def test_only_an_item_that_stops_being_recommendable_counts_as_a_removal(
    sync_redis, catalogue
):
    # Gateways stamp cached lists with the count: only what must leave them may bump it.
    announced = sync_redis.pubsub(ignore_subscribe_messages=True)
    announced.subscribe(keys.MODEL_EVENTS_CHANNEL)
    writes = [
        (catalogue.upsert([ItemWithId(item_id="i1", title="One")]), 0),  # new
        (catalogue.upsert([ItemWithId(item_id="i2", title="Two", available=False)]), 0),
        (catalogue.patch("i1", ItemPatch(title="Uno")), 0),  # still recommendable
        (catalogue.patch("i1", ItemPatch(available=False)), 1),
        (catalogue.patch("i1", ItemPatch(available=False)), 1),  # already out
        (catalogue.delete("i1"), 1),  # unavailable already: nothing left to remove
        (catalogue.patch("i2", ItemPatch(available=True)), 1),
        (catalogue.delete("i2"), 2),
        (catalogue.upsert([ItemWithId(item_id="i3", title="Three")]), 2),
        (catalogue.upsert([ItemWithId(item_id="i3", title="Three", available=False)]), 3),
    ]
    for write, expected in writes:
        await write
        assert removals(sync_redis) == expected
    heard = []  # the subscription's confirmation reads as None: skipped
    for _ in range(10):
        if (message := announced.get_message(timeout=0.2)) is not None:
            heard.append(message["data"])
    assert heard == ["removal 1", "removal 2", "removal 3"]
    announced.close()


async def test_an_item_stored_before_availability_was_a_field_is_removed_once(
    sync_redis, catalogue
):
    sync_redis.hset(keys.item("old"), mapping={"title": "Old", "categories": "[]"})
    await catalogue.delete("old")
    assert removals(sync_redis) == 1
