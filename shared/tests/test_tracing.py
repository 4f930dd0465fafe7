"""Traces carry no query string and no user id: a real request over a socket to an app served
by uvicorn, made with httpx, both instrumented as the services are, spans kept by an in-memory
exporter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from recsys_shared.processes import free_port, wait_until
from recsys_shared.trace_redaction import REDACTED, without_query, without_user
from recsys_shared.tracing import instrument, tracer_provider

SECRET = "s3cret-admin-key"


@pytest.fixture(params=["", "http/dup"], ids=["old-conventions", "old-and-stable-conventions"])
def conventions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The HTTP semantic conventions the instrumentations follow: the old ones (the default)
    and both (http/dup), so every URL attribute either sets is produced and checked."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", request.param)
    # The instrumentations read the variable once per process, at their first instrument():
    # forget that reading (both values are restored after the test).
    stability = _OpenTelemetrySemanticConventionStability
    monkeypatch.setattr(stability, "_initialized", False)
    monkeypatch.setattr(
        stability,
        "_OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING",
        dict(stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING),
    )
    return str(request.param)


@pytest.fixture
def traced(conventions: str) -> Iterator[tuple[str, InMemorySpanExporter]]:
    """An instrumented app answering on a loopback port; yields its URL and the exporter."""
    app = FastAPI()

    @app.get("/v1/echo")
    async def echo(key: str = "", k: int = 0) -> dict[str, Any]:
        return {"key": key, "k": k}

    @app.delete("/v1/users/{user_id}")
    async def erase(user_id: str) -> dict[str, Any]:
        return {"erased": user_id}

    exporter = InMemorySpanExporter()
    instrument(app, tracer_provider("test", SimpleSpanProcessor(exporter)))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10)
        yield f"http://127.0.0.1:{port}", exporter
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        HTTPXClientInstrumentor().uninstrument()
        FastAPIInstrumentor.uninstrument_app(app)


def _strings(span: ReadableSpan) -> list[str]:
    values = [span.name, *map(str, (span.attributes or {}).values())]
    for event in span.events:
        values += [event.name, *map(str, (event.attributes or {}).values())]
    return values


def test_no_span_records_the_query_string(traced: tuple[str, InMemorySpanExporter]) -> None:
    base, exporter = traced

    with httpx.Client() as client:
        response = client.get(f"{base}/v1/echo", params={"key": SECRET, "k": 5})

    # The app itself still saw the query: only what is recorded about it is redacted.
    assert response.json() == {"key": SECRET, "k": 5}
    wait_until(lambda: len(exporter.get_finished_spans()) >= 2, timeout=5)
    spans = exporter.get_finished_spans()
    for span in spans:
        for value in _strings(span):
            assert SECRET not in value, (span.name, value)
            assert "k=5" not in value, (span.name, value)
    by_kind = {span.kind: dict(span.attributes or {}) for span in spans}
    client_span, server_span = by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER]
    # The URLs are still there, path and all, with the query replaced.
    client_url = client_span.get("http.url", client_span.get("url.full"))
    assert client_url == f"{base}/v1/echo?{REDACTED}"
    assert server_span["http.url"] == f"{base}/v1/echo?{REDACTED}"
    assert server_span.get("http.target", "/v1/echo") == "/v1/echo"


@pytest.mark.parametrize("conventions", ["http/dup"], indirect=True)
def test_the_stable_conventions_query_attributes_are_redacted(
    traced: tuple[str, InMemorySpanExporter],
) -> None:
    base, exporter = traced  # url.query and url.full exist in the stable conventions only

    with httpx.Client() as client:
        assert client.get(f"{base}/v1/echo?key={SECRET}").status_code == 200

    wait_until(lambda: len(exporter.get_finished_spans()) >= 2, timeout=5)
    by_kind = {span.kind: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert by_kind[SpanKind.SERVER]["url.query"] == REDACTED
    assert by_kind[SpanKind.SERVER]["url.path"] == "/v1/echo"
    assert by_kind[SpanKind.CLIENT]["url.full"] == f"{base}/v1/echo?{REDACTED}"


def test_no_span_records_a_users_id(traced: tuple[str, InMemorySpanExporter]) -> None:
    base, exporter = traced
    user = "alice@example.com"

    with httpx.Client() as client:
        assert client.delete(f"{base}/v1/users/{user}").json() == {"erased": user}

    wait_until(lambda: len(exporter.get_finished_spans()) >= 2, timeout=5)
    spans = exporter.get_finished_spans()
    for span in spans:
        for value in _strings(span):
            assert "alice" not in value, (span.name, value)
    by_kind = {span.kind: dict(span.attributes or {}) for span in spans}
    client_url = by_kind[SpanKind.CLIENT].get("http.url", by_kind[SpanKind.CLIENT].get("url.full"))
    assert client_url == f"{base}/v1/users/{REDACTED}"  # which route, not whose data


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/v1/users/u%201/recommendations", f"/v1/users/{REDACTED}/recommendations"),
        ("http://fs:8201/users/bob", f"http://fs:8201/users/{REDACTED}"),
        ("/v1/items/i1/similar", "/v1/items/i1/similar"),
    ],
)
def test_without_user_keeps_the_route(url: str, expected: str) -> None:
    assert without_user(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:1/p?key=x", f"http://h:1/p?{REDACTED}"),
        ("/p?key=x&k=1", f"/p?{REDACTED}"),
        ("/p#key=x", f"/p?{REDACTED}"),
        ("/p?", f"/p?{REDACTED}"),
        ("http://h:1/p", "http://h:1/p"),
        ("/p", "/p"),
    ],
)
def test_without_query_keeps_the_path(url: str, expected: str) -> None:
    assert without_query(url) == expected
