"""Query strings and user ids kept out of traces.

The FastAPI (ASGI) and httpx instrumentations record the URL of every request a service
answers or makes, query string included (``http.url``, ``url.full``, ``url.query``; which of
them depends on ``OTEL_SEMCONV_STABILITY_OPT_IN``), and redact only a few well-known
signature parameters. A query string can hold a secret (a status page opened with
``?key=`` before it refused that, a token a client put there), and a trace backend is not the
place for it. Every query string is replaced with ``REDACTED`` while the span is still
open, before any exporter can see it: by :class:`QueryRedactor` as each span starts (httpx
sets its URL attributes then), and by :func:`server_request_hook`, which the ASGI
instrumentation calls after it has set the request's attributes a second time, once the
span is current. The path stays, so traces still say which route was called, but for the
user it names: ``/users/<id>`` becomes ``/users/REDACTED`` (a user's id is personal data, and
an erasure must not leave it in a trace backend that nothing erases); item ids stay.

Imported only when tracing is on (``recsys_shared.tracing``): the SDK costs start-up time.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

REDACTED = "REDACTED"
#: Attributes holding a URL, a request target or a path, of the old and the stable HTTP
#: conventions.
URL_ATTRIBUTES = ("http.url", "http.target", "url.full", "url.path")
#: A user's id as a path segment, in every service's routes (the gateway's /v1/users/{id},
#: the recommender's /users/{id}/recommendations, the feature-store's /users/{id}).
_USER_SEGMENT = re.compile(r"(/users/)[^/?#]+")
#: Attributes holding a query string alone.
QUERY_ATTRIBUTES = ("url.query",)


def without_query(url: str) -> str:
    """``url`` with its query string (and fragment) replaced by ``REDACTED``."""
    cut = min((index for index in (url.find("?"), url.find("#")) if index >= 0), default=-1)
    return url if cut < 0 else f"{url[:cut]}?{REDACTED}"


def without_user(url: str) -> str:
    """``url`` (or a path) with the user id it names replaced by ``REDACTED``."""
    return _USER_SEGMENT.sub(rf"\1{REDACTED}", url)


def redact(span: Span) -> None:
    """Replace the query strings and user ids in an open span's URL attributes."""
    attributes = span.attributes or {}
    for name in URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and (redacted := without_user(without_query(value))) != value:
            span.set_attribute(name, redacted)
    for name in QUERY_ATTRIBUTES:
        if attributes.get(name):
            span.set_attribute(name, REDACTED)


def server_request_hook(span: trace.Span, scope: dict[str, Any]) -> None:
    """For ``FastAPIInstrumentor.instrument_app(server_request_hook=...)``."""
    if isinstance(span, Span):  # not a NonRecordingSpan
        redact(span)


class QueryRedactor(SpanProcessor):
    """Redacts every span as it starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        redact(span)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
