"""Every request's request id (in and out), security headers, RED metrics and failure log.

Plain ASGI (no ``BaseHTTPMiddleware``): it sits on every request of the hot path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys_shared import metrics
from recsys_shared.logging import (
    REQUEST_ID_HEADER,
    new_request_id,
    request_id_var,
)

log = logging.getLogger("recsys.http")

_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()
#: Sent with every response: no MIME sniffing, no framing, no referrer leaking ids in URLs.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_SLOW_REQUEST_SECONDS = 1.0
#: Methods the metrics name; any other is ``other``: h11 (``--http h11``) passes any token a
#: client sends as the method, and each would be a new series, kept for the process's life.
_COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ObservabilityMiddleware:
    """Request id in and out, per-route RED metrics, and a log line for every failed request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        # (route, method, status) → its counter and histogram: prometheus_client's labels()
        # takes a lock and builds a key on every call, twice per request otherwise.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        # Each request runs in its own task, so the value cannot leak into another request.
        request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    *message.get("headers", ()),
                    (_REQUEST_ID_HEADER_BYTES, request_id.encode()),
                    *SECURITY_HEADERS,
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self._observe(
                template, method if method in _COUNTED_METHODS else "other", status, elapsed
            )
            if self.access_log or status >= 500 or elapsed > _SLOW_REQUEST_SECONDS:
                log.log(
                    logging.WARNING if status >= 500 else logging.INFO,
                    "%s %s -> %d in %.1f ms",
                    method,
                    template,
                    status,
                    elapsed * 1000,
                    extra={"route": template, "status": status, "duration_ms": elapsed * 1000},
                )

    def _observe(self, template: str, method: str, status: int, elapsed: float) -> None:
        series = self._series.get((template, method, status))
        if series is None:
            series = (
                metrics.HTTP_REQUESTS.labels(template, method, str(status)),
                metrics.HTTP_LATENCY.labels(template, method),
            )
            self._series[(template, method, status)] = series
        requests, latency = series
        requests.inc()
        latency.observe(elapsed)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER_BYTES:
            text: str = value.decode("latin-1")
            # A caller-chosen id is kept only if it is short and tame enough to log safely.
            if 0 < len(text) <= 128 and text.isascii() and text.isprintable():
                return text
            return None
    return None
