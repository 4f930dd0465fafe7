"""The read path against fake recommender replicas (MockTransport): pass-through, failover,
circuit breakers, the popular fallback from Redis and query validation."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.processes import wait_until
from recsys_shared.schemas import Recommendations, ScoredItem, Strategy
from recsys_shared.testing import assert_problem


@pytest.fixture(params=[True, False], ids=["fast-lane", "through-fastapi"])
def gateway(make_gateway: Any, request: pytest.FixtureRequest) -> Any:
    """Every test here runs twice: with the hot routes on the fast lane (as deployed) and
    with FAST_LANE=false (every route through FastAPI); the answers must be the same."""
    return make_gateway(fast_lane=request.param)


PROBLEM = "application/problem+json"
REPLICA_A = "recommender-a"
REPLICA_B = "recommender-b"


def _answer(**fields: Any) -> Recommendations:
    values: dict[str, Any] = {
        "user_id": "u1",
        "items": [
            ScoredItem(item_id="m1", score=0.9, title="Movie 1", categories=["Drama"]),
            ScoredItem(item_id="m2", score=0.4),
        ],
        "model_version": 7,
        "strategy": Strategy.PERSONALIZED,
        "recommendation_id": "rec-1",
        **fields,
    }
    return Recommendations(**values)


def _ok(answer: Recommendations) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answer.model_dump_json())

    return handler


def _failing_on(host: str, answer: Recommendations, *, status: int | None = None) -> Any:
    """``host`` refuses connections (or answers ``status``); the other replica answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == host:
            if status is None:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(status, json={"detail": "boom"})
        return httpx.Response(200, content=answer.model_dump_json())

    return handler


def _recommend(gateway: Any, headers: dict[str, str], user: str = "u1", **params: Any) -> Any:
    return gateway.client.get(f"/v1/users/{user}/recommendations", params=params, headers=headers)


def test_the_recommenders_answer_is_returned(gateway: Any, client_headers: dict[str, str]) -> None:
    answer = _answer()
    gateway.recommender.handler = _ok(answer)

    response = _recommend(gateway, client_headers, k=5, offset=3, category="Drama")

    assert response.status_code == 200, response.text
    assert Recommendations.model_validate(response.json()) == answer
    [sent] = gateway.recommender.requests
    assert sent.method == "GET"
    assert sent.url.path == "/users/u1/recommendations"
    assert dict(sent.url.params) == {
        "k": "5",
        "offset": "3",
        "exclude_seen": "true",
        "category": "Drama",
    }
    # The request id of the gateway's request travels to the recommender.
    assert sent.headers["x-request-id"] == response.headers["x-request-id"]


def test_an_invalid_body_from_the_recommender_falls_back(
    gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    catalogue.popular({"p1": 3.0})
    gateway.recommender.handler = lambda request: httpx.Response(200, json={"items": "nope"})

    response = _recommend(gateway, client_headers)

    # A garbled answer is never passed on: the popular fallback answers instead.
    assert response.status_code == 200, response.text
    body = Recommendations.model_validate(response.json())
    assert body.strategy is Strategy.POPULAR
    assert body.fallback_reason == "recommender_unavailable"
    assert [item.item_id for item in body.items] == ["p1"]


def test_replicas_are_used_in_turn(gateway: Any, client_headers: dict[str, str]) -> None:
    gateway.recommender.handler = _ok(_answer())

    for _ in range(4):
        assert _recommend(gateway, client_headers).status_code == 200

    hosts = [request.url.host for request in gateway.recommender.requests]
    assert hosts == [REPLICA_A, REPLICA_B, REPLICA_A, REPLICA_B]


@pytest.mark.parametrize("status", [None, 500, 503])
def test_a_failing_replica_is_skipped_for_the_next(
    gateway: Any, client_headers: dict[str, str], status: int | None
) -> None:
    answer = _answer()
    gateway.recommender.handler = _failing_on(REPLICA_A, answer, status=status)

    response = _recommend(gateway, client_headers)

    assert response.status_code == 200, response.text
    assert Recommendations.model_validate(response.json()) == answer
    hosts = [request.url.host for request in gateway.recommender.requests]
    assert hosts == [REPLICA_A, REPLICA_B]


def test_every_replica_down_serves_popular_items_without_seen_ones(
    gateway: Any, catalogue: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    catalogue.popular({"p1": 10.0, "p2": 5.0, "p3": 2.0, "p4": 1.0})
    for item_id in ("p1", "p2", "p3"):
        catalogue.item(item_id, categories=["Drama"])
    catalogue.seen("u1", {"p1": 3.0, "p3": 1.0})

    response = _recommend(gateway, client_headers, k=5)

    assert response.status_code == 200, response.text
    body = Recommendations.model_validate(response.json())
    assert body.strategy is Strategy.POPULAR
    assert body.fallback_reason == "recommender_unavailable"
    assert body.user_id == "u1"
    assert body.model_version is None
    assert [item.item_id for item in body.items] == ["p2", "p4"]
    assert body.items[0].title == "Title of p2"
    assert body.items[0].categories == ["Drama"]
    assert body.items[1].title is None
    # Scores are relative to the most popular item.
    assert [item.score for item in body.items] == [0.5, 0.1]
    # Both replicas were tried once, and what was served is recorded for attribution.
    hosts = sorted(request.url.host for request in gateway.recommender.requests)
    assert hosts == [REPLICA_A, REPLICA_B]
    name = keys.recommendation("u1", body.recommendation_id)
    # Written after the answer, not awaited by it.
    wait_until(lambda: bool(store.exists(name)), timeout=5, what="the list's record")
    record = json.loads(store.get(name) or "{}")
    assert record["items"] == ["p2", "p4"]
    assert record["user_id"] == "u1"


def test_the_fallback_keeps_seen_items_when_asked(
    gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    catalogue.popular({"p1": 10.0, "p2": 5.0})
    catalogue.seen("u1", {"p1": 3.0})

    response = _recommend(gateway, client_headers, exclude_seen="false")

    assert [item["item_id"] for item in response.json()["items"]] == ["p1", "p2"]


def test_the_fallback_pages_and_filters_by_category(
    gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    catalogue.popular({"p1": 10.0, "p2": 5.0, "p3": 2.0})
    catalogue.popular({"d1": 4.0, "d2": 3.0, "d3": 2.0, "d4": 1.0}, category="Drama")
    catalogue.seen("u1", {"d1": 1.0})

    response = _recommend(gateway, client_headers, k=2, offset=1, category="Drama")

    assert response.status_code == 200
    assert [item["item_id"] for item in response.json()["items"]] == ["d3", "d4"]


def test_the_fallback_reads_what_users_saw_in_their_partition(
    make_gateway: Any, catalogue: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(event_partitions=4)
    partitions = keys.Partitions(4)
    catalogue.popular({"p1": 10.0, "p2": 5.0, "p3": 1.0})
    users = ["u1", "u2", "u3", "u4", "u5", "u6"]
    assert len({partitions.of(user).number for user in users}) > 1
    for user in users:
        store.hset(partitions.of(user).user_items(user), "p1", 1.0)

    for user in users:
        body = _recommend(gateway, client_headers, user=user).json()
        assert [item["item_id"] for item in body["items"]] == ["p2", "p3"], user


def _replica_a_failing(
    make_gateway: Any, *, failures: int, reset_seconds: float
) -> tuple[Any, Recommendations]:
    """A gateway whose breaker opens after ``failures`` failures and lets a trial through after
    ``reset_seconds``, with replica A failing every call; what replica B answers."""
    gateway = make_gateway(breaker_failures=failures, breaker_reset_seconds=reset_seconds)
    answer = _answer()
    gateway.recommender.handler = _failing_on(REPLICA_A, answer)
    return gateway, answer


def test_the_breaker_stops_calls_to_a_failing_replica(
    make_gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway, answer = _replica_a_failing(make_gateway, failures=2, reset_seconds=60)

    for _ in range(10):
        response = _recommend(gateway, client_headers)
        assert response.status_code == 200
        assert Recommendations.model_validate(response.json()) == answer

    # Requests 1 and 3 start on A: after its second failure its breaker is open.
    assert gateway.recommender.calls_to(REPLICA_A) == 2
    assert gateway.recommender.calls_to(REPLICA_B) == 10


def _open_until_its_trial(
    make_gateway: Any, headers: dict[str, str], reset_seconds: float
) -> tuple[Any, Recommendations]:
    """A's breaker opened by its first failure, then the reset time waited out."""
    gateway, answer = _replica_a_failing(make_gateway, failures=1, reset_seconds=reset_seconds)
    _recommend(gateway, headers)
    assert gateway.recommender.calls_to(REPLICA_A) == 1
    time.sleep(reset_seconds * 1.2)
    return gateway, answer


def test_the_breaker_lets_a_trial_through_after_the_reset_time(
    make_gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway, answer = _open_until_its_trial(make_gateway, client_headers, 0.05)
    gateway.recommender.handler = _ok(answer)
    for _ in range(4):
        assert _recommend(gateway, client_headers).status_code == 200

    # The trial succeeded, so the breaker closed and A takes its turns again.
    assert gateway.recommender.calls_to(REPLICA_A) == 3


def test_a_trial_answered_with_a_refusal_closes_the_breaker(
    make_gateway: Any, client_headers: dict[str, str]
) -> None:
    # A 404 for an unknown item is the replica working: its trial must not keep it shut out.
    gateway, answer = _open_until_its_trial(make_gateway, client_headers, 0.5)
    gateway.recommender.handler = lambda request: httpx.Response(404, json={"detail": "no"})
    for _ in range(2):  # one of the two starts on A: the trial
        similar = gateway.client.get("/v1/items/nope/similar", headers=client_headers)
        assert similar.status_code == 404
    assert gateway.recommender.calls_to(REPLICA_A) == 2

    gateway.recommender.handler = _ok(answer)
    for _ in range(4):
        assert _recommend(gateway, client_headers).status_code == 200
    assert gateway.recommender.calls_to(REPLICA_A) == 4  # closed: A takes its turns again


def test_with_every_breaker_open_no_replica_is_called(
    make_gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(breaker_failures=1, breaker_reset_seconds=60)
    catalogue.popular({"p1": 1.0})

    first = _recommend(gateway, client_headers)
    calls = len(gateway.recommender.requests)
    later = [_recommend(gateway, client_headers) for _ in range(3)]

    assert calls == 2
    assert len(gateway.recommender.requests) == calls
    for response in (first, *later):
        assert response.status_code == 200
        assert response.json()["fallback_reason"] == "recommender_unavailable"


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"k": 101},
        {"k": "ten"},
        # Integers pydantic's lax mode would read, which name none in a URL.
        {"k": "1_0"},
        {"k": "+3"},
        {"k": "3.0"},
        {"k": " 3"},
        {"offset": "٣"},  # an Arabic-Indic digit
        {"offset": -1},
        {"offset": 1001},
        {"category": " padded"},
        {"category": "x" * 65},
    ],
)
def test_query_limits(gateway: Any, client_headers: dict[str, str], params: dict[str, Any]) -> None:
    for path in ("/v1/users/u1/recommendations", "/v1/items/i1/similar", "/v1/items/popular"):
        response = gateway.client.get(path, params=params, headers=client_headers)

        assert response.status_code == 422, f"{path}: {response.text}"
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["errors"][0]["field"] == f"query.{next(iter(params))}"
    assert gateway.recommender.requests == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/users/a%20b/recommendations", "has U+0020 at character 1"),
        # Bytes that are not UTF-8 (Latin-1 "café") decode to U+FFFD: refused, not served.
        ("/v1/users/caf%E9/recommendations", "has '\ufffd' (U+FFFD) at character 3"),
        ("/v1/items/caf%E9/similar", "has '\ufffd' (U+FFFD) at character 3"),
    ],
)
def test_an_invalid_path_id_is_a_422_saying_which_character(
    gateway: Any, client_headers: dict[str, str], path: str, message: str
) -> None:
    response = gateway.client.get(path, headers=client_headers)

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "path." + ("user_id" if "/users/" in path else "item_id")
    assert error["message"].startswith(f"{message} (an id has no whitespace")
    assert gateway.recommender.requests == []


def test_the_largest_allowed_query_is_passed_on(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway.recommender.handler = _ok(_answer())

    response = _recommend(gateway, client_headers, k=100, offset=1000)

    assert response.status_code == 200
    [sent] = gateway.recommender.requests
    assert sent.url.params["k"] == "100"
    assert sent.url.params["offset"] == "1000"


# ── similar items ────────────────────────────────────────────────────────────────────────
def test_similar_items_come_from_the_recommender(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    answer = _answer(user_id=None, item_id="i1", strategy=Strategy.SIMILAR)
    gateway.recommender.handler = _ok(answer)

    response = gateway.client.get("/v1/items/i1/similar", params={"k": 2}, headers=client_headers)

    assert response.status_code == 200
    assert Recommendations.model_validate(response.json()) == answer
    [sent] = gateway.recommender.requests
    assert sent.url.path == "/items/i1/similar"
    assert sent.url.params["k"] == "2"


def test_similar_items_of_an_item_the_recommender_does_not_know_is_a_404(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway.recommender.handler = lambda request: httpx.Response(
        404, json={"detail": "Item 'ghost' is not known to the model."}
    )

    response = gateway.client.get("/v1/items/ghost/similar", headers=client_headers)

    assert_problem(response, 404)
    body = response.json()
    assert body["type"] == "urn:recsys:problem:unknown-item"
    assert body["detail"] == "Item 'ghost' is not known to the model."
    # A 404 is an answer, not a failure: one replica was asked, no other one.
    assert len(gateway.recommender.requests) == 1


def test_a_4xx_from_the_recommender_is_not_retried_on_another_replica(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway.recommender.handler = lambda request: httpx.Response(400, json={"detail": "bad"})

    response = gateway.client.get("/v1/users/u1/recommendations", headers=client_headers)

    assert_problem(response, 422)
    assert len(gateway.recommender.requests) == 1


def test_similar_items_of_an_uncatalogued_item_while_the_recommender_is_down_is_a_503(
    gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    # The brief (and the README: "unknown item: 404") expect a 404 here. The gateway answers
    # 503 on purpose or by accident: an item may be known to the model from events alone
    # without a catalogue entry, so without a recommender the gateway cannot call it unknown.
    # What must hold either way: no 200 with made-up items, and a retryable problem.
    catalogue.popular({"p1": 1.0})

    response = gateway.client.get("/v1/items/ghost/similar", headers=client_headers)

    assert_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"] == "urn:recsys:problem:upstream-unavailable"
    assert len(gateway.recommender.requests) == 2


def test_similar_items_of_a_known_item_while_the_recommender_is_down_are_popular_ones(
    gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    catalogue.item("i1", categories=["Drama", "Crime"])
    catalogue.popular({"x1": 9.0, "x2": 8.0})
    catalogue.popular({"i1": 5.0, "d1": 4.0, "d2": 2.0}, category="Drama")
    catalogue.popular({"c1": 5.0}, category="Crime")

    response = gateway.client.get("/v1/items/i1/similar", headers=client_headers)

    assert response.status_code == 200, response.text
    body = Recommendations.model_validate(response.json())
    assert body.strategy is Strategy.POPULAR
    assert body.fallback_reason == "recommender_unavailable"
    assert body.item_id == "i1"
    # Popular in the item's first category, without the item itself.
    assert [item.item_id for item in body.items] == ["d1", "d2"]


def test_popular_items_are_served_from_redis_without_a_recommender(
    gateway: Any, catalogue: Any, client_headers: dict[str, str]
) -> None:
    catalogue.popular({"p1": 4.0, "p2": 2.0, "p3": 1.0})
    catalogue.item("p1", title="First")

    response = gateway.client.get("/v1/items/popular", params={"k": 2}, headers=client_headers)

    assert response.status_code == 200
    body = Recommendations.model_validate(response.json())
    assert body.strategy is Strategy.POPULAR
    assert body.fallback_reason is None
    assert [(item.item_id, item.score) for item in body.items] == [("p1", 1.0), ("p2", 0.5)]
    assert body.items[0].title == "First"
    assert gateway.recommender.requests == []


def test_a_replica_answering_an_invalid_body_is_failed_over(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    answer = _answer()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == REPLICA_A:
            return httpx.Response(200, json={"items": "nope"})
        return httpx.Response(200, content=answer.model_dump_json())

    gateway.recommender.handler = handler
    for _ in range(2):
        response = _recommend(gateway, client_headers)
        assert response.status_code == 200, response.text
        assert Recommendations.model_validate(response.json()) == answer
    assert REPLICA_A in {request.url.host for request in gateway.recommender.requests}


def test_popular_titles_are_kept_per_catalogue_version(
    gateway: Any, catalogue: Any, store: Any, client_headers: dict[str, str]
) -> None:
    catalogue.popular({"p1": 4.0})
    catalogue.item("p1", title="First")

    def title() -> str | None:
        response = gateway.client.get("/v1/items/popular", headers=client_headers)
        assert response.status_code == 200, response.text
        return Recommendations.model_validate(response.json()).items[0].title

    assert title() == "First"
    # Written without a version bump (no writer does that): the details come from the cache.
    store.hset(keys.item("p1"), keys.ITEM_TITLE, "Unseen")
    assert title() == "First"
    catalogue.item("p1", title="Renamed")  # bumps the catalogue version, as every write does
    assert title() == "Renamed"
