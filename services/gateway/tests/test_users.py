"""Erasing a user (admin): the gateway forwards it to the feature-store, which erases what the
data tier and the ephemeral Redis hold of the user (its own tests), and enqueues the rewrite of
snapshots and model artifacts for the retraining-worker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import redis

from recsys_shared import keys
from recsys_shared.tasks import ERASE_FROM_ARTIFACTS, MONITORING_QUEUE
from recsys_shared.testing import assert_problem


def _enqueued(store: redis.Redis) -> list[str]:
    """The names of the tasks waiting in the monitoring queue (kombu keeps it as a list)."""
    messages = [json.loads(raw) for raw in store.lrange(MONITORING_QUEUE, 0, -1)]
    for message in messages:
        assert store.exists(keys.task_record(message["headers"]["id"]))
    return [message["headers"]["task"] for message in messages]


def test_erasing_a_user_forwards_and_enqueues_the_artifact_rewrite(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    gateway.feature_store.handler = lambda request: httpx.Response(204)
    cached = keys.cached_lists(keys.Partitions(1).of("u*1"), "u*1")
    store.hset(cached, keys.cache_field("-", "k10"), "{}")

    response = gateway.client.delete("/v1/users/u*1", headers=admin_headers)

    assert response.status_code == 204, response.text
    [request] = gateway.feature_store.requests
    assert request.method == "DELETE"
    assert request.url.path == "/users/u*1"
    assert _enqueued(store) == [ERASE_FROM_ARTIFACTS]
    # Cached lists are the feature-store's to erase (on whichever Redis holds them): the
    # gateway deletes nothing itself, so it cannot erase less or more than the feature-store.
    assert store.exists(cached)


def test_erasing_is_idempotent(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    gateway.feature_store.handler = lambda request: httpx.Response(204)

    for _ in range(2):
        assert gateway.client.delete("/v1/users/u1", headers=admin_headers).status_code == 204
    assert _enqueued(store) == [ERASE_FROM_ARTIFACTS] * 2


def test_erasing_while_the_feature_store_is_down_is_a_503(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    response = gateway.client.delete("/v1/users/u1", headers=admin_headers)

    assert_problem(response, 503)
    assert "retry-after" in response.headers
    # Nothing is enqueued until the feature-store has erased: a retry does both.
    assert _enqueued(store) == []


def test_erasing_an_id_of_bytes_that_are_not_utf8_is_refused_not_answered_done(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    # "café" percent-encoded as Latin-1: decoded it would be "caf\ufffd", an id no one sent,
    # and a 204 would tell the client a user was erased who was not.
    gateway.feature_store.handler = lambda request: httpx.Response(204)

    response = gateway.client.delete("/v1/users/caf%E9", headers=admin_headers)

    [error] = assert_problem(response, 422)["errors"]
    assert error["field"] == "path.user_id"
    assert gateway.feature_store.requests == []
    assert _enqueued(store) == []
