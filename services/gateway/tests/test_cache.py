"""The versioned response cache: never a list from an older model version or from before the
user's latest applied event; one computation for concurrent misses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from gateway.cache import ResponseCache, cached_json, query_digest
from recsys_shared import keys
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.multiplexed import MultiplexedRedis
from recsys_shared.schemas import RecommendationQuery, Recommendations, ScoredItem, Strategy

USER = "u:1"  # a ':' in the id must not confuse the key layout


def _answer(version: int, item: str = "m1") -> Recommendations:
    return Recommendations(
        user_id=USER,
        items=[ScoredItem(item_id=item, score=0.5)],
        model_version=version,
        strategy=Strategy.PERSONALIZED,
        recommendation_id=f"rec-{version}-{item}",
    )


def _serve(gateway: Any, answer: list[Recommendations]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answer[0].model_dump_json())

    gateway.recommender.handler = handler


def _get(gateway: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = gateway.client.get(f"/v1/users/{USER}/recommendations", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_second_request_is_served_from_the_cache_with_its_age(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)
    _serve(gateway, [_answer(3)])

    first = _get(gateway, client_headers)
    second = _get(gateway, client_headers)

    assert first["cached"] is False
    assert first["cache_age_seconds"] is None
    assert second["cached"] is True
    assert second["cache_age_seconds"] >= 0
    assert second["items"] == first["items"]
    assert second["recommendation_id"] == first["recommendation_id"]
    assert len(gateway.recommender.requests) == 1
    [entry] = store.keys(keys.cache_user_prefix(USER) + "*")
    assert 0 < store.ttl(entry) <= gateway.settings.cache_ttl_seconds


def test_a_new_event_of_the_user_makes_the_cached_list_unreachable(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)
    answer = [_answer(3, "before")]
    _serve(gateway, answer)
    assert _get(gateway, client_headers)["items"][0]["item_id"] == "before"

    store.hincrby(keys.user_meta(USER), "epoch", 1)  # what the feature-store does per event
    answer[0] = _answer(3, "after")

    body = _get(gateway, client_headers)
    assert body["cached"] is False
    assert body["items"][0]["item_id"] == "after"


def test_a_new_model_version_makes_the_cached_list_unreachable(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)
    answer = [_answer(3)]
    _serve(gateway, answer)
    _get(gateway, client_headers)

    store.set(keys.MODEL_ACTIVE, 4)
    answer[0] = _answer(4)

    body = _get(gateway, client_headers)
    assert body["cached"] is False
    assert body["model_version"] == 4


def test_a_list_from_a_replica_still_on_the_old_version_is_not_stored(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 4)
    _serve(gateway, [_answer(3)])  # the replica has not loaded version 4 yet

    _get(gateway, client_headers)
    body = _get(gateway, client_headers)

    assert body["cached"] is False
    assert body["model_version"] == 3
    assert store.keys(keys.cache_user_prefix(USER) + "*") == []


def test_fallback_lists_are_never_cached(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)  # every replica refuses connections: the fallback answers
    first = _get(gateway, client_headers)
    assert first["strategy"] == "popular"
    assert store.keys(keys.cache_user_prefix(USER) + "*") == []


async def test_the_lookup_builds_the_key_the_way_keys_py_does(
    redis_client: aioredis.Redis, multiplexed_client: MultiplexedRedis
) -> None:
    cache = ResponseCache(multiplexed_client, ttl_seconds=60)
    query = RecommendationQuery(k=5, category="a:b")
    await redis_client.set(keys.MODEL_ACTIVE, 7)
    await redis_client.hset(keys.user_meta(USER), "epoch", 12)

    lookup = await cache.lookup(USER, query)
    assert lookup.key == keys.cache_user(USER, 7, "12", query_digest(query))
    assert lookup.entry is None

    cache.store(lookup, 7, _answer(7).model_dump_json())
    again = await cache.lookup(USER, query)
    assert again.entry is not None
    body = json.loads(cached_json(again.entry))
    assert body["model_version"] == 7
    assert body["cached"] is True
    assert 0 <= body["cache_age_seconds"] < 5


async def test_concurrent_misses_compute_once(multiplexed_client: MultiplexedRedis) -> None:
    cache = ResponseCache(multiplexed_client, ttl_seconds=60)
    calls = 0

    async def compute() -> Recommendations:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return _answer(1)

    results = await asyncio.gather(*(cache.single_flight("k", compute) for _ in range(20)))

    assert calls == 1
    assert {result.recommendation_id for result in results} == {"rec-1-m1"}
    assert await cache.single_flight("k", compute) is not None
    assert calls == 2  # after the flight lands, the next miss computes again


async def test_no_entry_is_stored_while_redis_is_near_its_memory_limit(
    multiplexed_client: MultiplexedRedis,
) -> None:
    guard = MemoryGuard(multiplexed_client, high_water=0.9)
    cache = ResponseCache(multiplexed_client, ttl_seconds=60, memory_guard=guard)
    query = RecommendationQuery(k=5)
    lookup = await cache.lookup(USER, query)

    guard.observe(0.95)  # as INFO memory would report it near maxmemory
    cache.store(lookup, lookup.version, _answer(lookup.version).model_dump_json())
    assert (await cache.lookup(USER, query)).entry is None

    guard.observe(0.5)
    cache.store(lookup, lookup.version, _answer(lookup.version).model_dump_json())
    assert (await cache.lookup(USER, query)).entry is not None
