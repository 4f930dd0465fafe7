"""The fast lane answers its routes exactly as FastAPI would: same bodies, statuses, headers,
error mapping and route metrics; anything it does not serve still reaches FastAPI."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import StarletteDeprecationWarning

from recsys_shared import web
from recsys_shared.errors import Backpressure, UnknownItem
from recsys_shared.fastpath.parameters import json_body, path_identifier, query_model
from recsys_shared.schemas import RecommendationQuery, UserListBatch

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*", category=StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

router = APIRouter(prefix="/lane")
served_by_endpoint: list[str] = []


@router.get("/things/{thing_id}")
async def thing(request: Request) -> Response:
    thing_id = path_identifier(request, "thing_id")
    served_by_endpoint.append(thing_id)
    if thing_id == "missing":
        raise UnknownItem(f"Item '{thing_id}' does not exist.")
    if thing_id == "busy":
        raise Backpressure("Too far behind.", retry_after=4)
    if thing_id == "broken":
        raise RuntimeError("a bug")
    query = query_model(request, RecommendationQuery)
    return Response(f'{{"thing":"{thing_id}","k":{query.k}}}', media_type="application/json")


@router.get("/plain")
async def plain(request: Request) -> Response:
    return Response(b"{}", media_type="application/json", headers={"X-Own": "1"})


@router.post("/batches")
async def batches(request: Request) -> Response:
    batch = json_body(await request.body(), UserListBatch)
    served_by_endpoint.extend(asked.user_id for asked in batch.requests)
    return Response(",".join(asked.user_id for asked in batch.requests), media_type="text/plain")


def _app(*, fast: bool) -> FastAPI:
    app = FastAPI()

    async def readiness(_: Request) -> dict[str, str]:
        return {}

    web.install(app, readiness=readiness, fast_routes=router.routes if fast else ())
    app.include_router(router)
    return app


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    with (
        TestClient(_app(fast=True), raise_server_exceptions=False) as fast,
        TestClient(_app(fast=False), raise_server_exceptions=False) as through_fastapi,
    ):
        yield fast, through_fastapi


def _comparable(response: Any) -> tuple[int, Any, dict[str, str]]:
    json_answer = response.headers.get("content-type", "").endswith("json")
    body = response.json() if json_answer else response.text
    if isinstance(body, dict):
        body.pop("request_id", None)
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in {"x-request-id", "date"}
    }
    return response.status_code, body, headers


@pytest.mark.parametrize(
    "target",
    [
        "/lane/things/a1",
        "/lane/things/a1?k=7&unknown=1",
        "/lane/things/a1?k=0",
        "/lane/things/a1?k=5&offset=-1",
        "/lane/things/a%20b",
        "/lane/things/missing",
        "/lane/things/busy",
        "/lane/things/broken",
        "/lane/plain",
        "/lane/things/a1/more",
    ],
)
def test_every_answer_matches_fastapis(clients: tuple[TestClient, TestClient], target: str) -> None:
    fast, through_fastapi = clients

    assert _comparable(fast.get(target)) == _comparable(through_fastapi.get(target))


def test_the_lane_calls_the_endpoint_itself(clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients
    served_by_endpoint.clear()

    assert fast.get("/lane/things/z9").status_code == 200
    assert served_by_endpoint == ["z9"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"requests":[{"user_id":"u1"},{"user_id":"u2","k":3}]}',
        b'{"requests":[]}',
        b'{"requests":[{"user_id":"u1","k":0}]}',
        b'{"requests":[{"user_id":"u1","bogus":1}]}',
        b"not json",
        b"",
    ],
)
def test_post_answers_match_fastapis(clients: tuple[TestClient, TestClient], body: bytes) -> None:
    fast, through_fastapi = clients
    headers = {"content-type": "application/json"}

    assert _comparable(fast.post("/lane/batches", content=body, headers=headers)) == _comparable(
        through_fastapi.post("/lane/batches", content=body, headers=headers)
    )


def test_a_valid_post_is_served_by_its_endpoint(clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients
    served_by_endpoint.clear()

    answer = fast.post("/lane/batches", json={"requests": [{"user_id": "p1"}, {"user_id": "p2"}]})

    assert (answer.status_code, answer.text) == (200, "p1,p2")
    assert served_by_endpoint == ["p1", "p2"]


def test_an_invalid_post_names_the_field(clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients

    answer = fast.post("/lane/batches", json={"requests": [{"user_id": "ok"}, {"k": 2}]})

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "requests[1].user_id"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_other_methods_still_reach_fastapi(
    clients: tuple[TestClient, TestClient], method: str
) -> None:
    fast, through_fastapi = clients
    served_by_endpoint.clear()

    answer = fast.request(method, "/lane/things/a1")

    assert answer.status_code == through_fastapi.request(method, "/lane/things/a1").status_code
    assert answer.status_code == 405
    assert served_by_endpoint == []


def test_head_of_a_fast_route_is_its_get_through_fastapi_without_the_body(
    clients: tuple[TestClient, TestClient],
) -> None:
    fast, through_fastapi = clients
    served_by_endpoint.clear()

    answers = [client.head("/lane/things/h1?k=3") for client in (fast, through_fastapi)]

    for answer in answers:
        assert (answer.status_code, answer.content) == (200, b"")
        assert answer.headers["content-length"] == str(len(b'{"thing":"h1","k":3}'))
    assert served_by_endpoint == ["h1", "h1"]


def test_metrics_carry_the_route_template(clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients
    fast.get("/lane/things/counted")

    samples = [
        sample
        for family in text_string_to_metric_families(fast.get("/metrics").text)
        for sample in family.samples
        if sample.name == "http_requests_total"
    ]

    assert any(sample.labels["route"] == "/lane/things/{thing_id}" for sample in samples)
    assert not any("counted" in sample.labels["route"] for sample in samples)


def test_a_root_path_is_not_part_of_the_match() -> None:
    with TestClient(_app(fast=True), root_path="/api") as client:
        served_by_endpoint.clear()
        response = client.get("/api/lane/things/r1")

    assert response.json() == {"thing": "r1", "k": 10}
    assert served_by_endpoint == ["r1"]


def test_only_single_method_get_or_post_routes_may_take_the_lane() -> None:
    other = APIRouter()

    @other.api_route("/write", methods=["PUT", "POST"])
    async def write(request: Request) -> Response:
        return Response()

    app = FastAPI()

    async def readiness(_: Request) -> dict[str, str]:
        return {}

    web.install(app, readiness=readiness, fast_routes=other.routes)
    with pytest.raises(TypeError, match="Only GET or POST routes"), TestClient(app) as client:
        client.get("/healthz")


def test_a_route_with_dependencies_is_refused_at_start_up() -> None:
    """A copied route with an auth dependency must never be served unauthenticated."""

    async def readiness(_: Request) -> dict[str, str]:
        return {}

    async def authorise() -> None:
        raise AssertionError("never reached on the lane")

    guarded = APIRouter(dependencies=[Depends(authorise)])

    @guarded.get("/guarded/{thing_id}")
    async def guarded_thing(request: Request) -> Response:
        return Response("{}")

    parsed = APIRouter()

    @parsed.get("/parsed/{thing_id}")
    async def parsed_thing(thing_id: str) -> Response:
        return Response(thing_id)

    for routes, message in ((guarded.routes, "dependencies"), (parsed.routes, "parameters")):
        app = FastAPI()
        web.install(app, readiness=readiness, fast_routes=routes)
        with pytest.raises(TypeError, match=message), TestClient(app) as client:
            client.get("/healthz")
