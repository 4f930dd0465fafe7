"""Compressed request bodies: gzip decoded within the body limit, both through FastAPI and on
the fast lane; a broken or truncated gzip body a 400, another coding a 415."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import REGISTRY
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import Message, Scope

from recsys_shared import web
from recsys_shared.schemas import EventBatch
from recsys_shared.testing import assert_problem
from recsys_shared.web.encoding import ContentDecodingMiddleware

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*", category=StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

MAX_BODY = 4_000
EVENT = {"user_id": "u", "item_id": "i", "type": "view"}
JSON = {"Content-Type": "application/json"}
GZIP = {**JSON, "Content-Encoding": "gzip"}

lane = APIRouter()


@lane.post("/lane/length")
async def body_length(request: Request) -> Response:
    """A fast-lane route: it reads the body itself."""
    return Response(str(len(await request.body())), media_type="text/plain")


def _app(*, fast: bool) -> FastAPI:
    app = FastAPI()

    async def readiness(_: Request) -> dict[str, str]:
        return {}

    web.install(
        app, readiness=readiness, max_body_bytes=MAX_BODY, fast_routes=lane.routes if fast else ()
    )
    app.include_router(lane)

    @app.post("/events")
    async def post_events(batch: EventBatch) -> dict[str, int]:
        return {"accepted": len(batch.events)}

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    return app


@pytest.fixture(scope="module", params=["fast lane", "through FastAPI"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with TestClient(_app(fast=request.param == "fast lane")) as test_client:
        yield test_client


def _batch(events: int) -> bytes:
    return json.dumps({"events": [EVENT] * events}).encode()


def test_a_gzip_body_is_read_as_the_json_it_holds(client: TestClient) -> None:
    body = _batch(30)
    assert len(body) < MAX_BODY

    response = client.post("/events", content=gzip.compress(body), headers=GZIP)

    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 30}


@pytest.mark.parametrize("coding", ["x-gzip", "GZIP", " gzip ", "identity, gzip"])
def test_the_names_of_gzip_are_read_as_http_allows(client: TestClient, coding: str) -> None:
    response = client.post(
        "/events", content=gzip.compress(_batch(2)), headers={**JSON, "Content-Encoding": coding}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2}


def test_identity_leaves_the_body_as_it_is(client: TestClient) -> None:
    response = client.post(
        "/events", content=_batch(2), headers={**JSON, "Content-Encoding": "identity"}
    )

    assert response.json() == {"accepted": 2}


def test_gzip_members_one_after_another_are_one_body(client: TestClient) -> None:
    body = _batch(5)
    members = gzip.compress(body[:17]) + gzip.compress(body[17:])

    response = client.post("/events", content=members, headers=GZIP)

    assert response.json() == {"accepted": 5}


def test_a_gzip_body_streamed_in_small_chunks_is_decoded_whole(client: TestClient) -> None:
    compressed = gzip.compress(_batch(20))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(compressed), 7):
            yield compressed[start : start + 7]

    response = client.post("/events", content=chunks(), headers=GZIP)

    assert response.json() == {"accepted": 20}


def test_the_fast_lane_reads_the_decoded_body(client: TestClient) -> None:
    body = _batch(10)

    response = client.post("/lane/length", content=gzip.compress(body), headers=GZIP)

    assert response.text == str(len(body))


#: Where the errors are raised: a route FastAPI serves, and one the fast lane serves (in the
#: "fast lane" app; FastAPI serves it in the other).
BODY_ROUTES = pytest.mark.parametrize("path", ["/events", "/lane/length"])


@BODY_ROUTES
def test_a_body_that_inflates_past_the_limit_is_a_413(client: TestClient, path: str) -> None:
    body = _batch(100)
    compressed = gzip.compress(body)
    assert len(compressed) < MAX_BODY < len(body)

    response = client.post(path, content=compressed, headers=GZIP)

    problem = assert_problem(response, 413)
    assert problem["type"] == "urn:recsys:problem:payload-too-large"
    assert "once decompressed" in problem["detail"]


@BODY_ROUTES
def test_the_limit_on_the_bytes_sent_still_holds(client: TestClient, path: str) -> None:
    noise = os.urandom(MAX_BODY)  # random bytes do not compress: the gzip body is larger

    response = client.post(path, content=gzip.compress(noise), headers=GZIP)

    problem = assert_problem(response, 413)
    assert "once decompressed" not in problem["detail"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_batch(2), "not valid gzip"),
        (gzip.compress(_batch(2))[:-12], "ends before its gzip stream does"),
        (gzip.compress(_batch(2)) + b"trailing", "not valid gzip"),
    ],
    ids=["not gzip", "truncated", "followed by garbage"],
)
@BODY_ROUTES
def test_a_broken_gzip_body_is_a_400_saying_so(
    client: TestClient, path: str, body: bytes, named: str
) -> None:
    response = client.post(path, content=body, headers=GZIP)

    problem = assert_problem(response, 400)
    assert named in problem["detail"]


@pytest.mark.parametrize("coding", ["br", "deflate", "gzip, gzip", "compress"])
@BODY_ROUTES
def test_another_coding_is_a_415_naming_it_and_what_is_accepted(
    client: TestClient, path: str, coding: str
) -> None:
    response = client.post(path, content=_batch(1), headers={**JSON, "Content-Encoding": coding})

    problem = assert_problem(response, 415)
    assert repr(coding) in problem["detail"]
    assert response.headers["accept-encoding"] == "gzip"


def test_a_gzip_request_is_counted_under_its_route(client: TestClient) -> None:
    def counted() -> float:
        value = REGISTRY.get_sample_value(
            "http_requests_total", {"route": "/events", "method": "POST", "status": "200"}
        )
        return value or 0.0

    before = counted()
    client.post("/events", content=gzip.compress(_batch(1)), headers=GZIP)

    assert counted() == before + 1


def test_a_route_that_reads_no_body_ignores_the_coding(client: TestClient) -> None:
    response = client.get("/ping", headers={"Content-Encoding": "br"})

    assert response.json() == {"pong": True}


async def test_a_bomb_is_refused_without_inflating_it() -> None:
    """50 MB of zeros sent as 50 KB of gzip: refused having inflated no more than the limit."""
    bomb = gzip.compress(bytes(50_000_000), compresslevel=9)
    scope: Scope = {"type": "http", "headers": [(b"content-encoding", b"gzip")]}
    sent = [{"type": "http.request", "body": bomb, "more_body": False}]

    async def receive() -> Message:
        return sent.pop()

    async def read_body(scope: Scope, receive: Any, send: Any) -> None:
        await receive()

    middleware = ContentDecodingMiddleware(read_body, max_bytes=MAX_BODY)
    tracemalloc.start()
    try:
        with pytest.raises(StarletteHTTPException) as refused:
            await middleware(scope, receive, _no_send)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert refused.value.status_code == 413
    assert peak < 1_000_000  # the bomb alone would be 50 MB


async def _no_send(message: Message) -> None:
    raise AssertionError(f"nothing is sent here: {message}")
