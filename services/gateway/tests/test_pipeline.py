"""The pipeline routes (admin): the status summed over the partitions, and the dead letters,
which the gateway forwards to the feature-store (faked at the transport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.schemas import DeadLetterEntry, DeadLetters, ReplayResult
from recsys_shared.testing import assert_problem

DEAD = DeadLetters(
    total=3,
    by_reason={"invalid_event": 2, "unknown_item": 1},
    entries=[
        DeadLetterEntry(
            id="1-0",
            partition=1,
            stream_id="1700000000000-0",
            reason="invalid_event",
            detail="value is not a number",
            entry='{"user_id":"u1"}',
        )
    ],
)


def _dead_letters_service(request: httpx.Request) -> httpx.Response:
    if request.method == "GET" and request.url.path == "/dead-letters":
        return httpx.Response(200, content=DEAD.model_dump_json())
    if request.method == "POST" and request.url.path == "/dead-letters/replay":
        replayed = min(json.loads(request.content)["limit"], 2)
        return httpx.Response(200, json={"replayed": replayed, "skipped": 1})
    return httpx.Response(404, json={"detail": "Not Found"})


@pytest.fixture
def admin_gateway(gateway: Any) -> Any:
    gateway.feature_store.handler = _dead_letters_service
    return gateway


def test_dead_letters_are_listed_by_the_feature_store(
    admin_gateway: Any, admin_headers: dict[str, str]
) -> None:
    default = admin_gateway.client.get("/v1/pipeline/dead-letters", headers=admin_headers)
    chosen = admin_gateway.client.get(
        "/v1/pipeline/dead-letters",
        params={"reason": "invalid event & co", "limit": 5},
        headers=admin_headers,
    )

    for response in (default, chosen):
        assert response.status_code == 200, response.text
        assert DeadLetters.model_validate(response.json()) == DEAD
    first, second = admin_gateway.feature_store.requests
    assert (first.method, first.url.path) == ("GET", "/dead-letters")
    assert dict(first.url.params) == {"limit": "100"}
    assert dict(second.url.params) == {"limit": "5", "reason": "invalid event & co"}
    assert second.headers["x-request-id"] == chosen.headers["x-request-id"]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"limit": "all"}, {"reason": ""}, {"reason": "r" * 65}],
)
def test_dead_letter_queries_are_validated_at_the_gateway(
    admin_gateway: Any, admin_headers: dict[str, str], params: dict[str, Any]
) -> None:
    response = admin_gateway.client.get(
        "/v1/pipeline/dead-letters", params=params, headers=admin_headers
    )

    assert_problem(response, 422)
    assert response.json()["errors"][0]["field"] == f"query.{next(iter(params))}"
    assert admin_gateway.feature_store.requests == []


def test_a_replay_is_forwarded_with_its_filter(
    admin_gateway: Any, admin_headers: dict[str, str]
) -> None:
    everything = admin_gateway.client.post(
        "/v1/pipeline/dead-letters/replay", headers=admin_headers
    )
    some = admin_gateway.client.post(
        "/v1/pipeline/dead-letters/replay",
        json={"reason": "unknown_item", "limit": 1},
        headers=admin_headers,
    )

    assert everything.status_code == 200, everything.text
    assert ReplayResult.model_validate(everything.json()) == ReplayResult(replayed=2, skipped=1)
    assert some.json() == {"replayed": 1, "skipped": 1}
    first, second = admin_gateway.feature_store.requests
    assert (first.method, first.url.path) == ("POST", "/dead-letters/replay")
    # No body means every dead letter, up to the default limit.
    assert json.loads(first.content) == {"limit": 1000}
    assert json.loads(second.content) == {"reason": "unknown_item", "limit": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0},
        {"limit": 100_001},
        {"limit": True},
        {"limit": "5"},
        {"reason": ""},
        {"everything": True},
        [],
    ],
)
def test_an_invalid_replay_never_reaches_the_feature_store(
    admin_gateway: Any, admin_headers: dict[str, str], body: Any
) -> None:
    response = admin_gateway.client.post(
        "/v1/pipeline/dead-letters/replay", json=body, headers=admin_headers
    )

    assert_problem(response, 422)
    assert admin_gateway.feature_store.requests == []


def test_the_dead_letter_routes_are_for_admins_only(
    admin_gateway: Any, client_headers: dict[str, str]
) -> None:
    listed = admin_gateway.client.get("/v1/pipeline/dead-letters", headers=client_headers)
    replayed = admin_gateway.client.post("/v1/pipeline/dead-letters/replay", headers=client_headers)

    for response in (listed, replayed):
        assert response.status_code == 403
        assert response.json()["type"] == "urn:recsys:problem:permission-denied"
    assert admin_gateway.feature_store.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, text="unavailable"),
        httpx.Response(200, json={"total": "many"}),
        httpx.Response(200, text="not json"),
    ],
)
def test_a_feature_store_that_fails_or_answers_nonsense_is_a_503(
    gateway: Any, admin_headers: dict[str, str], answer: httpx.Response
) -> None:
    gateway.feature_store.handler = lambda request: answer

    listed = gateway.client.get("/v1/pipeline/dead-letters", headers=admin_headers)
    replayed = gateway.client.post("/v1/pipeline/dead-letters/replay", headers=admin_headers)

    for response in (listed, replayed):
        assert_problem(response, 503, "upstream-unavailable")


def test_the_status_sums_the_partitions(
    make_gateway: Any,
    store: redis.Redis,
    client_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    gateway = make_gateway(event_partitions=3)
    partitions = keys.Partitions(3)
    users = [f"user-{index}" for index in range(12)]
    assert len({partitions.of(user).number for user in users}) == 3
    events = [
        {"event_id": "e1", "user_id": user, "item_id": "i1", "type": "view"} for user in users
    ]
    gateway.client.post("/v1/events", json={"events": events}, headers=client_headers)
    gateway.client.post("/v1/events", json={"events": events[:2]}, headers=client_headers)
    store.xadd(partitions.all[2].dead_letters, {keys.DEAD_REASON: "invalid_event"})
    store.hset(partitions.all[0].heartbeats, "fs-a", 100.0)
    store.hset(partitions.all[1].heartbeats, "fs-a", 200.0)

    response = gateway.client.get("/v1/pipeline", headers=admin_headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["partitions"] == 3
    assert body["counters"]["accepted"] == 12
    assert body["counters"]["duplicates"] == 2
    assert body["stream_length"] == 12
    assert body["consumer_lag"] == 12  # no consumer group has read anything yet
    assert body["dead_letters"] == 1
    assert body["consumers"] == {"fs-a": 200.0}  # a consumer's latest read, over its partitions
