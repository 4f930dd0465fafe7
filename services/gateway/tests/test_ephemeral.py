"""Cache entries, list records and rate-limit counters on a Redis of their own
(EPHEMERAL_REDIS_URL): a lookup reads the user's nonce and the entry there, in one command;
the replicas share their request counts there; and that Redis being
down costs cache hits and a shared limit, not answers. (Erasing a user's entries there is the
feature-store's: its erasure tests.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway.cache import NO_VARIANT, query_digest
from recsys_shared import keys
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.schemas import RecommendationQuery, Recommendations, ScoredItem, Strategy
from recsys_shared.testing import ok_body

USER = "u:1"
PARTITIONS = keys.Partitions(1)


@pytest.fixture
def split(make_gateway: Any, ephemeral_server: RedisServer) -> Any:
    gateway = make_gateway(ephemeral_redis_url=ephemeral_server.url)
    answer = Recommendations(
        user_id=USER,
        items=[ScoredItem(item_id="m1", score=0.5)],
        model_version=3,
        strategy=Strategy.PERSONALIZED,
        recommendation_id="rec-3",
    )
    gateway.recommender.handler = lambda request: httpx.Response(
        200, content=answer.model_dump_json()
    )
    return gateway


@pytest.fixture
def entries(ephemeral_server: RedisServer) -> Iterator[redis.Redis]:
    with ephemeral_server.inspector() as client:
        yield client


def _get(gateway: Any, headers: dict[str, str]) -> dict[str, Any]:
    return ok_body(gateway.client.get(f"/v1/users/{USER}/recommendations", headers=headers))


def test_entries_and_nonces_live_on_the_ephemeral_redis(
    split: Any, store: redis.Redis, entries: redis.Redis, client_headers: dict[str, str]
) -> None:
    lists = keys.cached_lists(PARTITIONS.of(USER), USER)
    store.set(keys.MODEL_ACTIVE, 3)
    split.client.portal.call(split.state.reads.cache.active.refresh)
    entries.hset(lists, keys.CACHE_NONCE, "n12")

    field = keys.cache_field(NO_VARIANT, query_digest(RecommendationQuery()))

    first = _get(split, client_headers)
    # The list is stored after the answer, not awaited by it (as test_cache's _get_and_store).
    wait_until(
        lambda: (entries.hget(lists, field) or "").startswith("3:0:n12:"),
        timeout=5,
        what="the list stored on the ephemeral Redis",
    )
    second = _get(split, client_headers)

    assert (first["cached"], second["cached"]) == (False, True)
    assert store.keys(keys.CACHE_PREFIX + "*") == []
    # A new event of the user (the feature-store renews the nonce) makes the entry stale.
    entries.hset(lists, keys.CACHE_NONCE, "n13")
    assert _get(split, client_headers)["cached"] is False


def test_a_fallback_is_recorded_on_the_ephemeral_redis(
    split: Any, store: redis.Redis, entries: redis.Redis, client_headers: dict[str, str]
) -> None:
    split.recommender.handler = lambda request: httpx.Response(503)
    store.zadd(keys.POPULAR, {"p1": 2.0})

    body = _get(split, client_headers)

    assert body["strategy"] == "popular"
    record = keys.recommendation(USER, body["recommendation_id"])
    # Written after the answer, not awaited by it.
    wait_until(lambda: bool(entries.exists(record)), timeout=5, what="the list's record")
    assert not store.exists(record)


def test_with_the_ephemeral_redis_down_lists_are_still_served(
    split: Any, ephemeral_server: RedisServer, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)
    ephemeral_server.stop()

    first, second = _get(split, client_headers), _get(split, client_headers)

    # No cache to read or fill: each request is computed, none fails.
    assert (first["cached"], second["cached"]) == (False, False)
    assert first["strategy"] == "personalized"


def test_the_replicas_share_request_counts_on_the_ephemeral_redis(
    split: Any, store: redis.Redis, entries: redis.Redis, client_headers: dict[str, str]
) -> None:
    def counted() -> int:
        names = entries.keys(keys.RATE_LIMIT_PREFIX + "*")
        return sum(int(entries.get(name) or 0) for name in names)

    for _ in range(3):
        split.client.get("/v1/items/popular", headers=client_headers)

    # Synced in the background (every RATE_LIMIT_SYNC_SECONDS), possibly over two seconds.
    deadline = time.monotonic() + 5
    while counted() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counted() == 3
    # Under a digest of the API key, never the key; nothing on the Redis that fsyncs.
    assert all(client_headers["X-API-Key"] + ":" not in name for name in entries.keys("*"))
    assert store.keys(keys.RATE_LIMIT_PREFIX + "*") == []
