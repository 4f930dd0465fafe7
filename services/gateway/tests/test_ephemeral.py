"""Cache entries and list records on a Redis of their own (EPHEMERAL_REDIS_URL): the lookup
reads the version and the user's epoch on the main Redis and the entry on the other; erasure
finds the entries there; and that Redis being down costs cache hits, not answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.processes import RedisServer
from recsys_shared.schemas import Recommendations, ScoredItem, Strategy

USER = "u:1"


@pytest.fixture
def ephemeral(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "ephemeral", durable=False).start()
    yield server
    server.stop()


@pytest.fixture
def split(make_gateway: Any, ephemeral: RedisServer) -> Any:
    gateway = make_gateway(ephemeral_redis_url=ephemeral.url)
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
def entries(ephemeral: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(ephemeral.url, decode_responses=True)
    yield client
    client.close()


def _get(gateway: Any, headers: dict[str, str]) -> dict[str, Any]:
    response = gateway.client.get(f"/v1/users/{USER}/recommendations", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_entries_live_on_the_ephemeral_redis_keyed_by_the_main_ones_version_and_epoch(
    split: Any, store: redis.Redis, entries: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)
    store.hset(keys.user_meta(USER), "epoch", "12")

    first, second = _get(split, client_headers), _get(split, client_headers)

    assert (first["cached"], second["cached"]) == (False, True)
    [entry] = entries.keys(keys.cache_user_prefix(USER) + "*")
    assert entry.startswith(keys.cache_user_prefix(USER) + "3:12:")
    assert store.keys(keys.cache_user_prefix(USER) + "*") == []
    # A new event of the user (a new epoch on the main Redis) makes the entry unreachable.
    store.hset(keys.user_meta(USER), "epoch", "13")
    assert _get(split, client_headers)["cached"] is False


def test_a_fallback_is_recorded_on_the_ephemeral_redis(
    split: Any, store: redis.Redis, entries: redis.Redis, client_headers: dict[str, str]
) -> None:
    split.recommender.handler = lambda request: httpx.Response(503)
    store.zadd(keys.POPULAR, {"p1": 2.0})

    body = _get(split, client_headers)

    assert body["strategy"] == "popular"
    assert entries.exists(keys.recommendation(body["recommendation_id"]))
    assert not store.exists(keys.recommendation(body["recommendation_id"]))


def test_erasure_drops_the_users_entries_on_the_ephemeral_redis(
    split: Any, entries: redis.Redis, admin_headers: dict[str, str]
) -> None:
    split.feature_store.handler = lambda request: httpx.Response(204)
    mine = [keys.cache_user(USER, 3, "7", f"k{index}") for index in range(30)]
    other = keys.cache_user("u:10", 3, "7", "k1")
    entries.mset(dict.fromkeys((*mine, other), "{}"))

    assert split.client.delete(f"/v1/users/{USER}", headers=admin_headers).status_code == 204

    assert not any(entries.exists(key) for key in mine)
    assert entries.exists(other)


def test_with_the_ephemeral_redis_down_lists_are_still_served(
    split: Any, ephemeral: RedisServer, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    store.set(keys.MODEL_ACTIVE, 3)
    ephemeral.stop()

    first, second = _get(split, client_headers), _get(split, client_headers)

    # No cache to read or fill: each request is computed, none fails.
    assert (first["cached"], second["cached"]) == (False, False)
    assert first["strategy"] == "personalized"
