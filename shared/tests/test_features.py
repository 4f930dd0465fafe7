"""Reading features the feature-store owns: popularity, user context, catalogue (real Redis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import redis

from recsys_shared import keys
from recsys_shared.features import FeatureReader, ItemDetails, UserContext, parse_categories
from recsys_shared.redis import RedisClient

PARTITIONS = keys.Partitions(3)


def user_items(user_id: str) -> str:
    return PARTITIONS.of(user_id).user_items(user_id)


def user_meta(user_id: str) -> str:
    return PARTITIONS.of(user_id).user_meta(user_id)


@pytest.fixture
def reader(redis_client: RedisClient) -> FeatureReader:
    return FeatureReader(redis_client, PARTITIONS)


@pytest.fixture
def popular(inspector: redis.Redis) -> dict[str, float]:
    scores = {"a": 40.0, "b": 20.0, "c": 10.0, "d": 5.0, "e": 4.0}
    inspector.zadd(keys.POPULAR, scores)
    inspector.zadd(keys.popular_in("Drama"), {"c": 8.0, "e": 2.0})
    return scores


async def test_popular_scores_are_relative_to_the_top_item(
    reader: FeatureReader, popular: dict[str, float]
) -> None:
    ranked = await reader.popular(k=3)

    assert ranked == [("a", 1.0), ("b", 0.5), ("c", 0.25)]


async def test_popular_skips_excluded_items(
    reader: FeatureReader, popular: dict[str, float]
) -> None:
    ranked = await reader.popular(k=3, exclude={"b", "d"})

    assert [item for item, _ in ranked] == ["a", "c", "e"]
    assert ranked[1] == ("c", 0.25)


async def test_popular_fills_k_even_when_the_top_items_are_excluded(
    reader: FeatureReader, popular: dict[str, float]
) -> None:
    ranked = await reader.popular(k=2, exclude={"a", "b", "c"})

    assert [item for item, _ in ranked] == ["d", "e"]
    assert all(0 < score <= 1.0 for _, score in ranked)


async def test_popular_pages_with_offset(reader: FeatureReader, popular: dict[str, float]) -> None:
    first = await reader.popular(k=2)
    second = await reader.popular(k=2, offset=2)
    third = await reader.popular(k=2, offset=4)
    beyond = await reader.popular(k=2, offset=10)

    assert [item for item, _ in first + second + third] == ["a", "b", "c", "d", "e"]
    assert second == [("c", 0.25), ("d", 0.125)]
    assert beyond == []


async def test_popular_pages_after_excluding(
    reader: FeatureReader, popular: dict[str, float]
) -> None:
    ranked = await reader.popular(k=2, offset=1, exclude={"a"})

    assert [item for item, _ in ranked] == ["c", "d"]


async def test_popular_within_a_category(reader: FeatureReader, popular: dict[str, float]) -> None:
    assert await reader.popular(k=5, category="Drama") == [("c", 1.0), ("e", 0.25)]
    assert await reader.popular(k=5, category="Comedy") == []


async def test_a_category_with_spaces_and_punctuation_is_read_as_it_is(
    reader: FeatureReader, inspector: redis.Redis
) -> None:
    inspector.zadd(keys.popular_in("Home & Garden: Tools"), {"h": 3.0})
    inspector.zadd(keys.popular_in("Home"), {"x": 9.0})

    assert await reader.popular(k=5, category="Home & Garden: Tools") == [("h", 1.0)]


async def test_popular_without_data_is_empty(reader: FeatureReader) -> None:
    assert await reader.popular(k=10) == []


async def test_user_context_reads_weights_epoch_and_versions(
    reader: FeatureReader, inspector: redis.Redis
) -> None:
    inspector.hset(user_items("u:1"), mapping={"a": "3.5", "b": "1"})
    inspector.hset(user_meta("u:1"), mapping={"epoch": "7", "updated_at": "1714564800.25"})
    inspector.set(keys.CATALOGUE_VERSION, 12)

    context = await reader.user_context("u:1")

    assert context == UserContext(
        weights={"a": 3.5, "b": 1.0},
        epoch="7",
        updated_at=1714564800.25,
        catalogue_version=12,
    )
    assert set(context.seen) == {"a", "b"}


async def test_unknown_user_has_an_empty_context(
    reader: FeatureReader, inspector: redis.Redis
) -> None:
    inspector.hset(user_items("u"), mapping={"a": "1"})

    context = await reader.user_context("someone-else")

    assert context == UserContext()
    assert list(context.seen) == []


async def test_user_contexts_answer_in_the_order_asked(
    reader: FeatureReader, inspector: redis.Redis
) -> None:
    inspector.hset(user_items("a"), mapping={"x": "2"})
    inspector.hset(user_meta("a"), mapping={"epoch": "3", "updated_at": "10"})
    inspector.hset(user_items("b"), mapping={"y": "1", "z": "4"})
    inspector.set(keys.CATALOGUE_VERSION, 5)

    contexts = await reader.user_contexts(["b", "nobody", "a", "b"])

    assert contexts == [
        UserContext(weights={"y": 1.0, "z": 4.0}, catalogue_version=5),
        UserContext(catalogue_version=5),
        UserContext(weights={"x": 2.0}, epoch="3", updated_at=10.0, catalogue_version=5),
        UserContext(weights={"y": 1.0, "z": 4.0}, catalogue_version=5),
    ]
    assert await reader.user_contexts([]) == []


async def test_item_parses_categories_and_availability(
    reader: FeatureReader, inspector: redis.Redis
) -> None:
    updated = datetime(2024, 5, 1, 12, tzinfo=UTC)
    inspector.hset(
        keys.item("i1"),
        mapping={
            "title": "Toy Story (1995)",
            "categories": json.dumps(["Animation", "Comedy"]),
            "available": "1",
            "updated_at": updated.isoformat(),
        },
    )
    inspector.hset(
        keys.item("i2"),
        mapping={"title": "Gone", "available": "0", "updated_at": updated.isoformat()},
    )

    first, second = await reader.item("i1"), await reader.item("i2")

    assert first is not None
    assert second is not None
    assert first.categories == ["Animation", "Comedy"]
    assert (first.title, first.available, first.updated_at) == ("Toy Story (1995)", True, updated)
    assert (second.categories, second.available) == ([], False)
    assert await reader.item("missing") is None


async def test_item_details_are_in_order_with_none_for_unknown_items(
    reader: FeatureReader, inspector: redis.Redis
) -> None:
    inspector.hset(keys.item("i1"), mapping={"title": "One", "categories": json.dumps(["A"])})

    details = await reader.item_details(["nope", "i1"])

    assert details == [None, ItemDetails(title="One", categories_json='["A"]')]
    assert await reader.item_details([]) == []


async def test_catalogue_sets(reader: FeatureReader, inspector: redis.Redis) -> None:
    inspector.sadd(keys.UNAVAILABLE_ITEMS, "x", "y")
    inspector.sadd(keys.category_items("Drama"), "a")

    assert await reader.unavailable_items() == {"x", "y"}
    assert await reader.category_items("Drama") == {"a"}
    assert await reader.category_items("None") == set()
    assert await reader.catalogue_version() == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ("", []),
        ('["a", "b"]', ["a", "b"]),
        ("[1, 2]", ["1", "2"]),
        ('{"a": 1}', []),
        ('"Drama"', []),
    ],
)
def test_parse_categories(raw: str | None, expected: list[str]) -> None:
    assert parse_categories(raw) == expected
