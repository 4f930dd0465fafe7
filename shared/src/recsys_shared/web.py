"""HTTP plumbing every FastAPI service uses: request ids, metrics, problem details, ops routes.

Installed with :func:`install`, once per app. The middleware is plain ASGI (no
``BaseHTTPMiddleware``), because it sits on every request of the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys_shared import code_version, metrics
from recsys_shared.errors import (
    InvalidInput,
    PayloadTooLarge,
    RecsysError,
    RetryableError,
    Unavailable,
)
from recsys_shared.logging import (
    REQUEST_ID_HEADER,
    configure_logging,
    new_request_id,
    request_id_var,
)
from recsys_shared.redis import (
    REDIS_UNAVAILABLE_ERRORS,
    create_async_redis,
    is_out_of_memory,
    store_unavailable,
)
from recsys_shared.schemas import (
    MAX_K,
    MAX_OFFSET,
    Category,
    Problem,
    Readiness,
    RecommendationQuery,
)
from recsys_shared.settings import ServiceSettings

log = logging.getLogger("recsys.http")

PROBLEM_MEDIA_TYPE = "application/problem+json"
_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()
#: Sent with every response: no MIME sniffing, no framing, no referrer leaking ids in URLs.
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_SLOW_REQUEST_SECONDS = 1.0


class ObservabilityMiddleware:
    """Request id in and out, per-route RED metrics, and a log line for every failed request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

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
                headers = list(message.get("headers", []))
                headers.append((_REQUEST_ID_HEADER_BYTES, request_id.encode()))
                headers.extend(_SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(template, method, str(status)).inc()
            metrics.HTTP_LATENCY.labels(template, method).observe(elapsed)
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


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER_BYTES:
            text: str = value.decode("latin-1")
            # A caller-chosen id is kept only if it is short and tame enough to log safely.
            if 0 < len(text) <= 128 and text.isascii() and text.isprintable():
                return text
            return None
    return None


class RequestTimeoutMiddleware:
    """Ends a request that runs longer than ``seconds`` with a 503 problem (if nothing was sent
    yet), so a stuck dependency cannot hold connections and workers forever."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            await _send_problem(
                scope,
                send,
                Unavailable(f"The request took longer than {self.seconds:g} s.", retry_after=1),
            )


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, whether or not Content-Length is set."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_problem(scope, send, self._too_large())
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException, because FastAPI turns any other error raised while it
                    # reads the body into a 400; ours maps to a 413 problem below.
                    raise StarletteHTTPException(413, self._too_large().detail)
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is larger than the limit of {self.max_bytes} bytes."
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_problem(scope: Scope, send: Send, error: RecsysError) -> None:
    response = problem_response(error)
    await response(scope, _noop_receive, send)


async def _noop_receive() -> Message:
    return {"type": "http.disconnect"}


def model_response(model: BaseModel) -> Response:
    """A model as JSON, serialised once by pydantic. Routes still declare ``response_model`` for
    the OpenAPI document; returning a Response skips FastAPI's second validation of a model
    that is valid by construction."""
    return Response(model.model_dump_json(), media_type="application/json")


def problem_response(
    error: RecsysError, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    problem = Problem(
        type=error.type_uri,
        title=error.title,
        status=error.status,
        detail=error.detail,
        errors=error.errors,
        request_id=request_id_var.get(),
    )
    all_headers = dict(headers or {})
    if isinstance(error, RetryableError):
        all_headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(
        problem.model_dump(),
        status_code=error.status,
        headers=all_headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _allowed_methods(request: Request) -> set[str]:
    allowed: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        methods = getattr(route, "methods", None)
        if match is not Match.NONE and methods:
            allowed |= set(methods)
    return allowed


def _generic_problem(status: int, title: str, detail: str) -> JSONResponse:
    problem = Problem(
        type="about:blank",
        title=title,
        status=status,
        detail=detail,
        request_id=request_id_var.get(),
    )
    return JSONResponse(problem.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def validation_errors(raw: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as the contract lists them: where, which event index, what is wrong."""
    listed = []
    for error in raw:
        location = [part for part in error.get("loc", ()) if part != "body"]
        entry: dict[str, Any] = {
            "field": _dotted(location),
            "message": error.get("msg", "invalid"),
            "type": error.get("type", "invalid"),
        }
        if (
            len(location) >= 2
            and location[0] in {"events", "items"}
            and isinstance(location[1], int)
        ):
            entry["index"] = location[1]
        listed.append(entry)
    return listed


def _dotted(location: list[Any]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


#: Called with the request and the listed errors before a 422 is sent (e.g. to count rejects).
InvalidInputHook = Callable[[Request, list[dict[str, Any]]], Awaitable[None]]


def _install_error_handlers(app: FastAPI, on_invalid: InvalidInputHook | None) -> None:
    async def on_recsys_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RecsysError)
        if exc.status >= 500:
            log.warning("answering %d: %s", exc.status, exc.detail)
        return problem_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = validation_errors(list(exc.errors()))
        if on_invalid is not None:
            await on_invalid(request, errors)
        indexes = sorted({e["index"] for e in errors if "index" in e})
        detail = f"{len(errors)} invalid field(s)"
        if indexes:
            detail += f" in entries {indexes}; nothing of the batch was stored"
        return problem_response(InvalidInput(detail + ".", errors=errors))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == PayloadTooLarge.status:
            # The body limit found out while streaming: the same problem as a large
            # Content-Length refused up front.
            return problem_response(PayloadTooLarge(str(exc.detail)))
        titles = {
            400: "Malformed request",
            404: "Not found",
            405: "Method not allowed",
            413: "Payload too large",
        }
        title = titles.get(exc.status_code, "HTTP error")
        response = _generic_problem(exc.status_code, title, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served
            # by several routes (GET, PUT, DELETE of one item) allows all of theirs.
            response.headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return response

    async def on_redis_error(_: Request, exc: Exception) -> Response:
        log.warning("redis error: %s", type(exc).__name__)
        metrics.REDIS_ERRORS.labels(type(exc).__name__).inc()
        return problem_response(store_unavailable(exc))

    async def on_redis_response_error(request: Request, exc: Exception) -> Response:
        if is_out_of_memory(exc):
            return await on_redis_error(request, exc)
        return await on_unexpected_error(request, exc)

    async def on_unexpected_error(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return _generic_problem(
            500, "Internal error", "An unexpected error occurred; it was logged."
        )

    app.add_exception_handler(RecsysError, on_recsys_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for error_type in REDIS_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, on_redis_error)
    app.add_exception_handler(redis.exceptions.ResponseError, on_redis_response_error)
    app.add_exception_handler(Exception, on_unexpected_error)


ReadinessCheck = Callable[[Request], Awaitable[dict[str, str]]]


def ops_router(readiness: ReadinessCheck) -> APIRouter:
    """``/healthz`` (the process answers), ``/readyz`` (its dependencies do), ``/metrics``."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers; checks no dependency")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: dependencies reachable and the service able to do its job",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
    )
    async def readyz(request: Request) -> Response:
        checks = await readiness(request)
        ready = all(value == "ok" for value in checks.values())
        body = Readiness(status="ready" if ready else "not_ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


def install(
    app: FastAPI,
    *,
    readiness: ReadinessCheck,
    max_body_bytes: int = 1_048_576,
    access_log: bool = False,
    on_invalid: InvalidInputHook | None = None,
    request_timeout_seconds: float = 30.0,
) -> None:
    """Wire the shared middleware, error mapping and ops routes into a service's app."""
    _install_error_handlers(app, on_invalid)
    app.include_router(ops_router(readiness))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(RequestTimeoutMiddleware, seconds=request_timeout_seconds)
    app.add_middleware(ObservabilityMiddleware, access_log=access_log)


def start_service(settings: ServiceSettings) -> aioredis.Redis:
    """What every service does first in its lifespan: logs as configured, its build info
    exported, and its one Redis client for the process."""
    configure_logging(settings.service_name, level=settings.log_level, json_lines=settings.log_json)
    metrics.BUILD_INFO.info({"service": settings.service_name, "version": code_version()})
    return create_async_redis(settings.redis_dsn, timeout=settings.redis_timeout_seconds)


async def redis_readiness(client: Any) -> str:
    """'ok' when Redis answers a PING within its timeout, else what went wrong."""
    try:
        await client.ping()
    except (*REDIS_UNAVAILABLE_ERRORS, redis.exceptions.ResponseError) as error:  # type: ignore[misc]
        return f"unreachable: {type(error).__name__}"
    return "ok"


async def _recommendation_query(
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items to return")] = 10,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="How many of the best items to skip (paging)")
    ] = 0,
    exclude_seen: Annotated[
        bool, Query(description="Leave out items the user already interacted with")
    ] = True,
    category: Annotated[Category | None, Query(description="Only items of this category")] = None,
) -> RecommendationQuery:
    return RecommendationQuery(k=k, offset=offset, exclude_seen=exclude_seen, category=category)


#: The query parameters of every recommendation endpoint, validated the same in every service.
RecommendationQueryDep = Annotated[RecommendationQuery, Depends(_recommendation_query)]
