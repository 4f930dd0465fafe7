"""HTTP plumbing: problem details, request ids, body limits, ops routes and route metrics."""

from __future__ import annotations

import asyncio
import gc
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client.parser import text_string_to_metric_families
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.exceptions import StarletteDeprecationWarning

from recsys_shared import web
from recsys_shared.errors import (
    Backpressure,
    Conflict,
    InvalidInput,
    NotFound,
    RateLimited,
    RecsysError,
    StoreUnavailable,
    UnknownItem,
)
from recsys_shared.schemas import (
    ID_PATTERN,
    MAX_ERRORS_PER_ENTRY,
    PATTERN_RULES,
    EventBatch,
    FieldError,
)
from recsys_shared.web.problems import InvalidInputHook, invalid_input_detail

with warnings.catch_warnings():
    # Starlette 1.x asks for the `httpx2` package, which this environment does not ship; its
    # TestClient still works on httpx, and warnings are errors in this suite.
    warnings.filterwarnings("ignore", message=".*httpx2.*", category=StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

MAX_BODY = 1_000
PROBLEM = "application/problem+json"
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def _build_app(checks: dict[str, str], max_body_bytes: int = MAX_BODY) -> FastAPI:
    app = FastAPI()

    async def readiness(_: Request) -> dict[str, str]:
        return dict(checks)

    web.install(app, readiness=readiness, max_body_bytes=max_body_bytes)

    @app.get("/things/{thing_id}")
    async def get_thing(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise UnknownItem(f"Item '{thing_id}' does not exist.")
        if thing_id == "locked":
            raise Conflict("The thing is locked.")
        if thing_id == "busy":
            raise Backpressure("Too far behind.", retry_after=7)
        if thing_id == "throttled":
            raise RateLimited("Slow down.", retry_after=3)
        if thing_id == "crash":
            raise RuntimeError("a bug")
        return {"thing_id": thing_id}

    @app.post("/events")
    async def post_events(batch: EventBatch) -> dict[str, int]:
        return {"accepted": len(batch.events)}

    return app


@pytest.fixture
def checks() -> dict[str, str]:
    return {"redis": "ok"}


@pytest.fixture
def client(checks: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(_build_app(checks)) as test_client:
        yield test_client


def _assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "request_id"} <= set(body)
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# ── domain errors ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("thing_id", "error"),
    [("missing", UnknownItem), ("locked", Conflict), ("busy", Backpressure)],
)
def test_domain_errors_become_problem_details(
    client: TestClient, thing_id: str, error: type[RecsysError]
) -> None:
    response = client.get(f"/things/{thing_id}")

    body = _assert_problem(response, error.status)
    assert body["type"] == f"urn:recsys:problem:{error.slug}"
    assert body["title"] == error.title
    assert body["detail"]


def test_unknown_item_keeps_its_own_type_but_not_found_status(client: TestClient) -> None:
    body = _assert_problem(client.get("/things/missing"), 404)

    assert UnknownItem.status == NotFound.status == 404
    assert body["type"] == "urn:recsys:problem:unknown-item"
    assert body["detail"] == "Item 'missing' does not exist."


@pytest.mark.parametrize(
    ("thing_id", "status", "seconds"), [("busy", 503, 7), ("throttled", 429, 3)]
)
def test_retryable_errors_carry_retry_after(
    client: TestClient, thing_id: str, status: int, seconds: int
) -> None:
    response = client.get(f"/things/{thing_id}")

    _assert_problem(response, status)
    assert response.headers["retry-after"] == str(seconds)


def test_non_retryable_errors_have_no_retry_after(client: TestClient) -> None:
    response = client.get("/things/locked")

    assert "retry-after" not in response.headers


def test_problem_response_for_every_error_kind() -> None:
    for error in [InvalidInput("bad"), StoreUnavailable("down", retry_after=2), NotFound("x")]:
        response = web.problem_response(error)

        assert response.status_code == error.status
        assert response.media_type == PROBLEM
        assert ("retry-after" in response.headers) == (error.status == 503)


# ── request validation ────────────────────────────────────────────────────────────────────
def test_validation_errors_name_the_event_index(client: TestClient) -> None:
    events = [
        {"user_id": "u", "item_id": "i", "type": "view"},
        {"user_id": "u", "item_id": "i", "type": "hover"},
        {"user_id": "u", "item_id": "i", "type": "view"},
        {"user_id": "a b", "item_id": "i", "type": "view"},
    ]

    response = client.post("/events", json={"events": events})

    body = _assert_problem(response, 422)
    assert body["type"] == "urn:recsys:problem:invalid-input"
    by_field = {entry["field"]: entry for entry in body["errors"]}
    assert set(by_field) == {"events[1].type", "events[3].user_id"}
    assert by_field["events[1].type"]["index"] == 1
    assert by_field["events[3].user_id"]["index"] == 3
    assert all(entry["message"] and entry["type"] for entry in body["errors"])
    assert body["detail"] == (
        "2 invalid fields (events[1].type, events[3].user_id) in entries 1, 3; "
        "nothing of the batch was stored."
    )


def test_one_broken_entry_is_named_in_the_singular() -> None:
    errors = [FieldError(field="events[0].type", message="bad", type="enum", index=0)]

    assert invalid_input_detail(errors) == (
        "1 invalid field (events[0].type) in entry 0; nothing of the batch was stored."
    )


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("a b", "has U+0020 at character 1"),
        ("tenant/42", "has '/' (U+002F) at character 6"),
        ("caf\ufffd", "has '\ufffd' (U+FFFD) at character 3"),
    ],
)
def test_a_refused_id_is_explained_in_words_naming_the_character(
    client: TestClient, user_id: str, message: str
) -> None:
    event = {"user_id": user_id, "item_id": "i", "type": "view"}

    [error] = _assert_problem(client.post("/events", json={"events": [event]}), 422)["errors"]

    assert (error["field"], error["type"]) == ("events[0].user_id", "string_pattern_mismatch")
    assert error["message"] == f"{message} ({PATTERN_RULES[ID_PATTERN].rule})"


def test_a_single_invalid_field_is_named_in_the_detail(client: TestClient) -> None:
    response = client.post("/events", json={"events": "none"})

    assert _assert_problem(response, 422)["detail"] == "1 invalid field (events)."


def test_the_detail_names_the_first_fields_and_entries_and_counts_the_rest() -> None:
    errors = [
        FieldError(field=f"events[{index}].{name}", message="bad", type="t", index=index)
        for index in range(8)
        for name in ("user_id", "type")
    ]

    assert invalid_input_detail(errors) == (
        "16 invalid fields (events[0].user_id, events[0].type, events[1].user_id, "
        "events[1].type, events[2].user_id and 11 more) in entries 0, 1, 2, 3, 4 and 3 more; "
        "nothing of the batch was stored."
    )


def test_validation_errors_outside_a_batch_have_no_index(client: TestClient) -> None:
    response = client.post("/events", json={"events": [], "extra": 1})

    body = _assert_problem(response, 422)
    assert {entry["field"] for entry in body["errors"]} == {"events", "extra"}
    assert all("index" not in entry for entry in body["errors"])


def test_malformed_json_is_a_problem_naming_the_body_and_where_it_breaks(
    client: TestClient,
) -> None:
    response = client.post(
        "/events", content=b'{"events": []}  x', headers={"content-type": "application/json"}
    )

    [error] = _assert_problem(response, 422)["errors"]
    # FastAPI puts the character offset where an entry's index goes: it is no entry.
    assert (error["field"], error["type"]) == ("body", "json_invalid")
    assert "index" not in error
    assert error["message"] == "is not valid JSON: Extra data at character 16"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"events": ["caf\xe9"]}', "is not valid JSON: byte 16 is not UTF-8 (0xe9)"),
        (b'{"events": [' + b"9" * 5_000 + b"]}", "is not valid JSON: Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON: nested too deep to read"),
    ],
    ids=["not-utf-8", "integer-of-5000-digits", "nested-100000-deep"],
)
def test_json_the_decoder_cannot_read_is_a_422_naming_the_body(body: bytes, message: str) -> None:
    """FastAPI's own answer is a bare 400 ("There was an error parsing the body")."""
    with TestClient(_build_app({}, max_body_bytes=1_048_576)) as client:
        response = client.post(
            "/events", content=body, headers={"content-type": "application/json"}
        )

    [error] = _assert_problem(response, 422)["errors"]
    assert (error["field"], error["type"]) == ("body", "json_invalid")
    assert error["message"].startswith(message)


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {}])
def test_a_json_body_without_the_json_content_type_says_so(
    client: TestClient, headers: dict[str, str]
) -> None:
    body = b'{"events": [{"user_id": "u", "item_id": "i", "type": "view"}]}'

    response = client.post("/events", content=body, headers=headers)

    [error] = _assert_problem(response, 422)["errors"]
    assert error == {
        "field": "body",
        "message": "must be JSON, sent with Content-Type: application/json",
        "type": "content_type",
    }


def test_a_json_body_that_is_not_an_object_is_not_blamed_on_its_content_type(
    client: TestClient,
) -> None:
    response = client.post("/events", json=[{"user_id": "u"}])

    [error] = _assert_problem(response, 422)["errors"]
    assert (error["field"], error["type"]) == ("body", "model_attributes_type")


def test_valid_batch_passes(client: TestClient) -> None:
    response = client.post(
        "/events", json={"events": [{"user_id": "u", "item_id": "i", "type": "view"}]}
    )

    assert response.status_code == 200
    assert response.json() == {"accepted": 1}


# ── body size ─────────────────────────────────────────────────────────────────────────────
def _big_batch() -> bytes:
    event = b'{"user_id": "u", "item_id": "i", "type": "view"}'
    return b'{"events": [' + b",".join([event] * 40) + b"]}"


def test_body_over_the_limit_with_content_length_is_413(client: TestClient) -> None:
    body = _big_batch()
    assert len(body) > MAX_BODY

    response = client.post("/events", content=body, headers={"content-type": "application/json"})

    problem = _assert_problem(response, 413)
    assert problem["type"] == "urn:recsys:problem:payload-too-large"
    assert str(MAX_BODY) in problem["detail"]


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    body = _big_batch()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    response = client.post(
        "/events", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    problem = _assert_problem(response, 413)
    assert problem["type"] == "urn:recsys:problem:payload-too-large"
    assert problem["title"] == "Payload too large"
    assert str(MAX_BODY) in problem["detail"]


def test_chunked_body_under_the_limit_passes(client: TestClient) -> None:
    body = b'{"events": [{"user_id": "u", "item_id": "i", "type": "view"}]}'

    def chunks() -> Iterator[bytes]:
        yield body[:20]
        yield body[20:]

    response = client.post(
        "/events", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 200
    assert response.json() == {"accepted": 1}


# ── request ids ───────────────────────────────────────────────────────────────────────────
def test_incoming_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/things/missing", headers={"X-Request-ID": "trace-abc-123"})

    assert response.headers["x-request-id"] == "trace-abc-123"
    assert response.json()["request_id"] == "trace-abc-123"


def test_a_fresh_request_id_is_minted_per_request(client: TestClient) -> None:
    first = client.get("/things/a").headers["x-request-id"]
    second = client.get("/things/a").headers["x-request-id"]

    assert _HEX_ID.match(first)
    assert _HEX_ID.match(second)
    assert first != second


@pytest.mark.parametrize("unsafe", [b"x" * 129, "caf\u00e9".encode("latin-1"), b"bell\x07"])
def test_unsafe_request_ids_are_replaced(client: TestClient, unsafe: bytes) -> None:
    response = client.get("/things/a", headers=[(b"X-Request-ID", unsafe)])

    assert _HEX_ID.match(response.headers["x-request-id"])


# ── routing and ops ───────────────────────────────────────────────────────────────────────
def test_unknown_route_is_a_404_problem(client: TestClient) -> None:
    body = _assert_problem(client.get("/no/such/route"), 404)

    assert body["title"] == "Not Found"  # about:blank: the status phrase (RFC 9457)
    assert body["detail"] == "Nothing is served at /no/such/route."
    long = _assert_problem(client.get("/" + "x" * 5000), 404)
    assert long["detail"] == "Nothing is served at /" + "x" * 199 + "…."


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_trailing_slash_is_a_404_problem_not_a_redirect(client: TestClient, method: str) -> None:
    response = client.request(
        method, "/things/a/", headers={"Host": "evil.example"}, follow_redirects=False
    )

    body = _assert_problem(response, 404)
    assert body["detail"] == "Nothing is served at /things/a/."
    assert "location" not in response.headers


def test_an_http_error_raised_with_its_own_detail_keeps_it() -> None:
    app = _build_app({})

    @app.get("/shelf")
    async def shelf() -> None:
        raise StarletteHTTPException(404, "The shelf was taken down.")

    with TestClient(app) as client:
        body = _assert_problem(client.get("/shelf"), 404)

    assert body["detail"] == "The shelf was taken down."


def test_wrong_method_is_a_405_problem_naming_the_allowed_ones(client: TestClient) -> None:
    response = client.delete("/events")

    body = _assert_problem(response, 405)
    assert body["title"] == "Method Not Allowed"
    assert body["detail"] == "DELETE is not served at /events; it serves POST."
    assert response.headers["allow"] == "POST"


def test_allow_names_the_methods_of_routes_in_included_routers() -> None:
    # FastAPI keeps an included router as one route of its own, without ``methods``.
    app = _build_app({})
    router = APIRouter(prefix="/shelf")

    @router.get("/{book}")
    async def read(book: str) -> dict[str, str]:
        return {"book": book}

    @router.put("/{book}")
    async def write(book: str) -> dict[str, str]:
        return {"book": book}

    app.include_router(router)
    with TestClient(app) as client:
        response = client.post("/shelf/b1")

    assert _assert_problem(response, 405)["detail"].endswith("it serves GET, HEAD, PUT.")
    assert response.headers["allow"] == "GET, HEAD, PUT"


# ── HEAD ──────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("path", ["/healthz", "/things/t1", "/things/missing", "/nothing"])
def test_head_answers_as_get_would_without_the_body(client: TestClient, path: str) -> None:
    as_get = client.get(path)
    response = client.head(path)

    assert response.status_code == as_get.status_code
    assert response.content == b""
    for header in ("content-type", "content-length", "x-content-type-options"):
        assert response.headers[header] == as_get.headers[header]


def test_head_is_refused_where_get_is_not_served(client: TestClient) -> None:
    response = client.head("/events")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_a_route_of_its_own_for_head_answers_it() -> None:
    app = _build_app({})

    @app.get("/shelf")
    async def shelf() -> dict[str, str]:
        return {"shelf": "full"}

    @app.head("/shelf")
    async def shelf_head() -> Response:
        return Response(headers={"X-Shelf": "own"})

    with TestClient(app) as client:
        response = client.head("/shelf")

    assert response.status_code == 200
    assert response.headers["x-shelf"] == "own"


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_every_check_is_ok(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok"}}


def test_readyz_is_503_when_a_check_fails(checks: dict[str, str], client: TestClient) -> None:
    checks["model"] = "no active model"

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"redis": "ok", "model": "no active model"},
    }


def _requests_total(text: str, route: str, status: int, method: str = "GET") -> float:
    """The value of ``http_requests_total`` for one route template, status and method, or 0."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels == {
                "route": route,
                "method": method,
                "status": str(status),
            }:
                return float(sample.value)
    return 0.0


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    before = _requests_total(client.get("/metrics").text, "/things/{thing_id}", 200)

    client.get("/things/first-raw-id")
    client.get("/things/second-raw-id")
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert _requests_total(response.text, "/things/{thing_id}", 200) == before + 2
    assert "first-raw-id" not in response.text
    assert _requests_total(response.text, "/things/first-raw-id", 200) == 0.0
    assert "http_request_duration_seconds_bucket" in response.text


def test_a_head_is_counted_under_its_route_and_method(client: TestClient) -> None:
    before = _requests_total(client.get("/metrics").text, "/things/{thing_id}", 200, "HEAD")

    client.head("/things/raw-id")

    text = client.get("/metrics").text
    assert _requests_total(text, "/things/{thing_id}", 200, "HEAD") == before + 1


def test_a_method_of_a_clients_own_invention_is_counted_as_other(client: TestClient) -> None:
    before = _requests_total(client.get("/metrics").text, "/things/{thing_id}", 405, "other")

    for method in ("BREW", "PROPFIND", "X-SCAN-1"):  # h11 passes any token through
        client.request(method, "/things/raw-id")

    text = client.get("/metrics").text
    assert _requests_total(text, "/things/{thing_id}", 405, "other") == before + 3
    assert "BREW" not in text


def test_metrics_label_unmatched_routes_without_the_raw_path(client: TestClient) -> None:
    client.get("/secret/raw/path/42")

    text = client.get("/metrics").text

    assert _requests_total(text, "unmatched", 404) >= 1
    assert "/secret/raw/path/42" not in text


def _app_with_invalid_input_hook(on_invalid: InvalidInputHook) -> FastAPI:
    async def readiness(_: Request) -> dict[str, str]:
        return {}

    app = FastAPI()
    web.install(app, readiness=readiness, on_invalid=on_invalid)

    @app.post("/events")
    async def post_events(batch: EventBatch) -> dict[str, int]:
        return {"accepted": len(batch.events)}

    return app


def test_the_invalid_input_hook_sees_the_listed_errors() -> None:
    seen: list[tuple[str, list[FieldError]]] = []

    async def on_invalid(request: Request, errors: list[FieldError]) -> None:
        seen.append((request.url.path, errors))

    with TestClient(_app_with_invalid_input_hook(on_invalid)) as client:
        bad = client.post("/events", json={"events": [{"user_id": "u", "item_id": "i"}]})
        good = client.post(
            "/events", json={"events": [{"user_id": "u", "item_id": "i", "type": "like"}]}
        )

    assert (bad.status_code, good.status_code) == (422, 200)
    assert len(seen) == 1
    path, errors = seen[0]
    assert path == "/events"
    assert [error.model_dump() for error in errors] == bad.json()["errors"]
    assert errors[0].index == 0


def test_a_422_lists_every_bad_entry_a_few_errors_each_and_the_hook_sees_them_all() -> None:
    seen: list[FieldError] = []

    async def on_invalid(_: Request, errors: list[FieldError]) -> None:
        seen.extend(errors)

    unknown_fields = {f"x{n}": 0 for n in range(MAX_ERRORS_PER_ENTRY + 3)}
    event = {"user_id": "u", "item_id": "i", "type": "like", **unknown_fields}
    valid = {"user_id": "u", "item_id": "i", "type": "like"}
    with TestClient(_app_with_invalid_input_hook(on_invalid)) as client:
        response = client.post("/events", json={"events": [event, valid, event], "y": 1})

    body = _assert_problem(response, 422)
    listed = [(error.get("index"), error["field"]) for error in body["errors"]]
    assert listed == [
        *[(0, f"events[0].x{n}") for n in range(MAX_ERRORS_PER_ENTRY)],
        *[(2, f"events[2].x{n}") for n in range(MAX_ERRORS_PER_ENTRY)],
        (None, "y"),
    ]
    total = 2 * (MAX_ERRORS_PER_ENTRY + 3) + 1
    assert body["detail"].endswith(
        f"; {len(listed)} of the {total} errors are listed"
        f" (at most {MAX_ERRORS_PER_ENTRY} an entry)."
    )
    assert len(seen) == total


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/healthz", "/no-such-route"):
        response = client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"


def test_an_unexpected_error_is_a_500_problem_with_the_usual_headers(
    checks: dict[str, str],
) -> None:
    with TestClient(_build_app(checks), raise_server_exceptions=False) as crashing:
        response = crashing.get("/things/crash", headers={"X-Request-ID": "req-crash-1"})

    body = _assert_problem(response, 500)
    assert (body["type"], body["title"]) == ("about:blank", "Internal Server Error")
    assert body["request_id"] == "req-crash-1"
    assert "a bug" not in response.text  # logged, not shown
    assert response.headers.get_list("x-request-id") == ["req-crash-1"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_redis_errors_become_the_contracts_errors() -> None:
    import glide

    from recsys_shared.errors import StoreError, StoreOutOfMemory, StoreUnavailable
    from recsys_shared.redis import translated

    full = translated(
        glide.RequestError("OOM command not allowed when used memory > 'maxmemory'."), timeout=2
    )
    in_script = translated(
        glide.RequestError(
            "An error was signalled by the server: - ResponseError: OOM command not allowed"
        ),
        timeout=2,
    )
    late = translated(glide.TimeoutError("timed out"), timeout=2)
    gone = translated(glide.ConnectionError("connection refused"), timeout=2)
    failing_over = translated(glide.RequestError("CLUSTERDOWN The cluster is down"), timeout=2)
    wrong = translated(glide.RequestError("WRONGTYPE: Operation against a key"), timeout=2)

    for error in (full, in_script):
        assert isinstance(error, StoreOutOfMemory)
        assert (error.status, error.retry_after) == (503, 5)
        assert "memory limit" in error.detail
    for error in (late, gone, failing_over):
        assert isinstance(error, StoreUnavailable)
        assert not isinstance(error, StoreOutOfMemory)
        assert (error.status, error.retry_after) == (503, 1)
    assert isinstance(wrong, StoreError)
    assert (wrong.status, wrong.code) == (500, "WRONGTYPE")


def test_a_request_running_past_the_timeout_gets_a_503_problem() -> None:
    import asyncio

    app = FastAPI()

    async def readiness(_: Request) -> dict[str, str]:
        return {}

    web.install(app, readiness=readiness, request_timeout_seconds=0.2)

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {"done": "too late"}

    @app.get("/fast")
    async def fast() -> dict[str, str]:
        return {"done": "in time"}

    with TestClient(app) as test_client:
        body = _assert_problem(test_client.get("/slow"), 503)
        assert "0.2 s" in body["detail"]
        assert test_client.get("/fast").json() == {"done": "in time"}


def test_settling_the_collector_freezes_start_up_and_collects_young_objects_less_often() -> None:
    before = gc.get_threshold()
    try:
        web.settle_garbage_collector()

        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (web.GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def _slow_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(scope["sleep"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


async def _call(app: Any, sleep: float) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "sleep": sleep}
    await app(scope, receive, send)
    return sent


async def test_only_the_overdue_requests_time_out_and_nothing_is_left_behind() -> None:
    middleware = web.RequestTimeoutMiddleware(_slow_app, seconds=0.2)

    answers = await asyncio.gather(*(_call(middleware, sleep) for sleep in (0.0, 0.05, 5, 5)))

    statuses = [sent[0]["status"] for sent in answers]
    assert statuses == [200, 200, 503, 503]
    assert not middleware._deadlines
    assert not middleware._expired


async def _reading_app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


async def test_a_client_that_stalls_its_body_gets_a_408_and_the_connection_closed() -> None:
    middleware = web.RequestTimeoutMiddleware(_reading_app, seconds=0.2)
    sent: list[Any] = []
    parts = iter([{"type": "http.request", "body": b"{", "more_body": True}])

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        part = next(parts, None)
        if part is None:
            await asyncio.sleep(30)  # the rest of the body never comes
        return part

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    await middleware(scope, receive, send)

    start = sent[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert b"did not arrive in 0.2 s" in sent[1]["body"]
    assert not middleware._deadlines


async def test_a_request_cancelled_by_someone_else_stays_cancelled() -> None:
    middleware = web.RequestTimeoutMiddleware(_slow_app, seconds=30)
    request = asyncio.ensure_future(_call(middleware, 5))
    await asyncio.sleep(0.05)

    request.cancel()  # the server shutting down, say: not a timeout to answer with a 503

    with pytest.raises(asyncio.CancelledError):
        await request
    assert not middleware._deadlines
