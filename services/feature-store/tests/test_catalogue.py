"""Catalogue: item writes keep the hash, category sets, popularity and availability in step."""

from __future__ import annotations

import json

import pytest

from feature_store.catalogue import Catalogue
from recsys_shared import keys
from recsys_shared.schemas import EventType, ItemWithId


@pytest.fixture
def catalogue(redis_client) -> Catalogue:
    return Catalogue(redis_client)


async def version(client) -> int:
    return int(await client.get(keys.CATALOGUE_VERSION) or 0)


async def test_upsert_stores_items_and_bumps_the_version(redis_client, catalogue):
    await catalogue.upsert(
        [
            ItemWithId(
                item_id="i1", title="Toy Story (1995)", categories=["kids", "comedy", "kids"]
            ),
            ItemWithId(item_id="i2", title="Heat", available=False),
        ]
    )

    one = await redis_client.hgetall(keys.item("i1"))
    assert one["title"] == "Toy Story (1995)"
    assert json.loads(one["categories"]) == ["comedy", "kids"]  # sorted, unique
    assert one["available"] == "1"
    assert one["updated_at"]
    two = await redis_client.hgetall(keys.item("i2"))
    assert (two["title"], json.loads(two["categories"]), two["available"]) == ("Heat", [], "0")
    assert await redis_client.smembers(keys.ITEMS) == {"i1", "i2"}
    assert await redis_client.smembers(keys.category_items("kids")) == {"i1"}
    assert await redis_client.smembers(keys.category_items("comedy")) == {"i1"}
    assert await redis_client.smembers(keys.UNAVAILABLE_ITEMS) == {"i2"}
    assert await version(redis_client) == 2

    await catalogue.upsert([ItemWithId(item_id="i1", title="Toy Story", categories=["kids"])])
    assert await redis_client.hget(keys.item("i1"), "title") == "Toy Story"
    assert await version(redis_client) == 3


async def test_changing_categories_moves_the_item_and_its_popularity(redis_client, catalogue):
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a", "b"])])
    await redis_client.zadd(keys.POPULAR, {"i1": 7.5})
    await redis_client.zadd(keys.popular_in("a"), {"i1": 7.5})
    await redis_client.zadd(keys.popular_in("b"), {"i1": 7.5})

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["b", "c"])])

    assert await redis_client.smembers(keys.category_items("a")) == set()
    assert await redis_client.smembers(keys.category_items("b")) == {"i1"}
    assert await redis_client.smembers(keys.category_items("c")) == {"i1"}
    assert await redis_client.zscore(keys.popular_in("a"), "i1") is None
    assert await redis_client.zscore(keys.popular_in("b"), "i1") == 7.5
    assert await redis_client.zscore(keys.popular_in("c"), "i1") == 7.5
    assert await redis_client.zscore(keys.POPULAR, "i1") == 7.5
    assert json.loads(await redis_client.hget(keys.item("i1"), "categories")) == ["b", "c"]


async def test_popularity_earned_by_events_follows_a_category_change(
    redis_client, catalogue, stream, applier, make_event
):
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a"])])
    await applier.apply(await stream.deliver([make_event("u1", "i1", EventType.PURCHASE)]), now=1.0)
    score = await redis_client.zscore(keys.POPULAR, "i1")
    assert score is not None
    assert score > 0
    assert await redis_client.zscore(keys.popular_in("a"), "i1") == score

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["z"])])

    assert await redis_client.zscore(keys.popular_in("a"), "i1") is None
    assert await redis_client.zscore(keys.popular_in("z"), "i1") == score


async def test_unavailable_item_leaves_every_popular_list(redis_client, catalogue):
    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a", "b"])])
    await redis_client.zadd(keys.POPULAR, {"i1": 3.0, "other": 1.0})
    await redis_client.zadd(keys.popular_in("a"), {"i1": 3.0, "other": 1.0})
    await redis_client.zadd(keys.popular_in("b"), {"i1": 3.0})

    await catalogue.upsert(
        [ItemWithId(item_id="i1", title="t", categories=["a", "b"], available=False)]
    )

    assert await redis_client.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert await redis_client.zrange(keys.POPULAR, 0, -1) == ["other"]
    assert await redis_client.zrange(keys.popular_in("a"), 0, -1) == ["other"]
    assert await redis_client.zscore(keys.popular_in("b"), "i1") is None
    # Still in the catalogue and its categories, only not recommendable.
    assert await redis_client.hget(keys.item("i1"), "available") == "0"
    assert await redis_client.smembers(keys.category_items("a")) == {"i1"}

    await catalogue.upsert([ItemWithId(item_id="i1", title="t", categories=["a", "b"])])
    assert not await redis_client.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert await redis_client.hget(keys.item("i1"), "available") == "1"


async def test_delete_removes_the_item_and_keeps_it_unavailable(redis_client, catalogue):
    await catalogue.upsert(
        [
            ItemWithId(item_id="i1", title="t", categories=["a"]),
            ItemWithId(item_id="i2", title="u", categories=["a"]),
        ]
    )
    await redis_client.zadd(keys.POPULAR, {"i1": 2.0, "i2": 1.0})
    await redis_client.zadd(keys.popular_in("a"), {"i1": 2.0, "i2": 1.0})
    before = await version(redis_client)

    assert await catalogue.delete("i1") is True

    assert await redis_client.exists(keys.item("i1")) == 0
    assert await redis_client.smembers(keys.ITEMS) == {"i2"}
    assert await redis_client.smembers(keys.category_items("a")) == {"i2"}
    assert await redis_client.smembers(keys.UNAVAILABLE_ITEMS) == {"i1"}
    assert await redis_client.zrange(keys.POPULAR, 0, -1) == ["i2"]
    assert await redis_client.zrange(keys.popular_in("a"), 0, -1) == ["i2"]
    assert await version(redis_client) == before + 1

    assert await catalogue.delete("i1") is False  # already gone
    assert await redis_client.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert await catalogue.delete("never-existed") is False


async def test_erase_user_removes_every_user_key_and_counts_the_erasure(
    redis_client, stream, applier, make_event, catalogue
):
    await applier.apply(
        await stream.deliver([make_event("u1", "i1"), make_event("u2", "i1")]), now=1.0
    )
    assert (
        await redis_client.exists(
            keys.user_items("u1"), keys.user_times("u1"), keys.user_meta("u1")
        )
        == 3
    )

    assert await catalogue.erase_user("u1") is True

    assert (
        await redis_client.exists(
            keys.user_items("u1"), keys.user_times("u1"), keys.user_meta("u1")
        )
        == 0
    )
    assert await redis_client.smembers(keys.USERS) == {"u2"}
    assert await redis_client.exists(keys.user_items("u2")) == 1
    assert await redis_client.hget(keys.PIPELINE_STATS, "erasures") == "1"

    # Idempotent for the data; nothing left to erase.
    assert await catalogue.erase_user("u1") is False
    assert await catalogue.erase_user("nobody") is False
    assert await redis_client.smembers(keys.USERS) == {"u2"}
    # Erasing nothing starts no new data generation (no pointless retraining).
    assert await redis_client.hget(keys.PIPELINE_STATS, "erasures") == "1"


async def test_deleting_an_unknown_item_changes_nothing(redis_client, catalogue):
    before = await version(redis_client)
    assert await catalogue.delete("never-seen") is False
    assert await version(redis_client) == before
    assert not await redis_client.sismember(keys.UNAVAILABLE_ITEMS, "never-seen")
