"""Erasing a user (admin): the feature-store erases the history, the gateway its cached answers."""

from __future__ import annotations

from typing import Any

import httpx
import redis

from recsys_shared import keys

PROBLEM = "application/problem+json"


def test_erasing_a_user_forwards_and_drops_only_their_cache(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    gateway.feature_store.handler = lambda request: httpx.Response(204)
    mine = [keys.cache_user("u*1", 3, "7", f"k{index}") for index in range(600)]
    theirs = keys.cache_user("u*10", 3, "7", "k10")
    other = keys.cache_user("ux1", 3, "7", "k10")
    store.mset(dict.fromkeys((*mine, theirs, other), "{}"))

    response = gateway.client.delete("/v1/users/u*1", headers=admin_headers)

    assert response.status_code == 204, response.text
    [request] = gateway.feature_store.requests
    assert request.method == "DELETE"
    assert request.url.path == "/users/u*1"
    assert not any(store.exists(key) for key in mine)
    # A glob character in the id is literal: "u*1" is not a pattern matching other users.
    assert store.exists(theirs)
    assert store.exists(other)


def test_erasing_is_idempotent(gateway: Any, admin_headers: dict[str, str]) -> None:
    gateway.feature_store.handler = lambda request: httpx.Response(204)

    for _ in range(2):
        assert gateway.client.delete("/v1/users/u1", headers=admin_headers).status_code == 204


def test_erasing_while_the_feature_store_is_down_is_a_503(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    cached = keys.cache_user("u1", 1, "1", "k10")
    store.set(cached, "{}")

    response = gateway.client.delete("/v1/users/u1", headers=admin_headers)

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert "retry-after" in response.headers
    # The cache stays until the history is gone, so a retry erases both.
    assert store.exists(cached)
