"""Tracing, switched on by configuration: one request is one trace across gateway and recommender.

A minimal OTLP/HTTP receiver in the test collects what the services export; the spans are
decoded with the OpenTelemetry protobuf definitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from recsys_shared.processes import free_port, wait_until
from recsys_shared.testing import Stack, client_headers, own_stack

pytestmark = pytest.mark.integration


class Collector:
    """Spans received, as (service name, trace id, span name)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    attribute.value.string_value
                    for attribute in resource_spans.resource.attributes
                    if attribute.key == "service.name"
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append((service, span.trace_id.hex(), span.name))


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.receive(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received, port
    server.shutdown()
    server.server_close()


@pytest.fixture
def traced(tmp_path: Path, collector: tuple[Collector, int]) -> Iterator[Stack]:
    _, port = collector
    with own_stack(
        tmp_path,
        ("feature-store", "recommender1", "recommender2", "gateway"),
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
    ) as stack:
        yield stack


def test_a_request_is_one_trace_across_gateway_and_recommender(
    traced: Stack, collector: tuple[Collector, int]
) -> None:
    received, _ = collector
    response = httpx.get(
        f"{traced.gateway}/v1/users/someone/recommendations", headers=client_headers(), timeout=10
    )
    assert response.status_code == 200

    def shared_traces() -> set[str]:
        with received.lock:
            by_service: dict[str, set[str]] = {}
            for service, trace, name in received.spans:
                if "recommendations" in name:
                    by_service.setdefault(service, set()).add(trace)
        return by_service.get("gateway", set()) & by_service.get("recommender", set())

    # Health probes make traces of their own: the one that matters is the request's, seen by
    # both services under the same trace id.
    wait_until(
        lambda: bool(shared_traces()),
        timeout=20,
        what="the request's trace from the gateway and a recommender",
    )


def test_tracing_is_off_without_an_endpoint(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    received, port = collector
    # The collector is where the OpenTelemetry SDK's own variable points: an exporter set up
    # without OTEL_EXPORTER_OTLP_ENDPOINT (the switch) would send it the request's spans.
    with own_stack(
        tmp_path,
        ("gateway",),
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces",
        OTEL_BSP_SCHEDULE_DELAY="100",
    ) as stack:
        httpx.get(f"{stack.gateway}/v1/items/popular", headers=client_headers(), timeout=10)
        time.sleep(1)  # ten export periods: spans, had there been any, would have arrived
    assert received.spans == []
