"""HTTP plumbing every FastAPI service uses: request ids, metrics, problem details, ops routes.

A service builds its app with :func:`create_service_app`, which installs all of it
(:func:`install`). The middleware is plain ASGI (no ``BaseHTTPMiddleware``), because it sits
on every request of the hot path.

Split by concern: ``observability`` (request ids, metrics, the failure log), ``limits``
(time and body size), ``encoding`` (gzip bodies decoded, other codings refused),
``problems`` (error mapping), ``methods`` (which methods a path serves; HEAD answered as
GET), ``ops`` (liveness, readiness, metrics), ``state`` (the typed lifespan state routes
read), ``lists`` (the hot list routes' answer); the fast lane lives apart, in
:mod:`recsys_shared.fastpath`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from recsys_shared import code_version, metrics
from recsys_shared.fastpath.lane import FastLane
from recsys_shared.layout import check_layout
from recsys_shared.logging import configure_logging
from recsys_shared.redis import RedisClient, connect
from recsys_shared.schemas import PROBLEM_MEDIA_TYPE
from recsys_shared.settings import ServiceSettings
from recsys_shared.tracing import FASTAPI_TELEMETRY_OFF, setup_tracing
from recsys_shared.web.encoding import ContentDecodingMiddleware
from recsys_shared.web.limits import BodySizeLimitMiddleware, RequestTimeoutMiddleware
from recsys_shared.web.methods import HeadAsGetMiddleware
from recsys_shared.web.observability import ObservabilityMiddleware
from recsys_shared.web.ops import LivenessCheck, ReadinessCheck, ops_router, redis_readiness
from recsys_shared.web.problems import (
    InvalidInputHook,
    install_error_handlers,
    problem_response,
    validation_errors,
)

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "PROBLEM_MEDIA_TYPE",
    "BodySizeLimitMiddleware",
    "ContentDecodingMiddleware",
    "FastLane",
    "HeadAsGetMiddleware",
    "ObservabilityMiddleware",
    "RequestTimeoutMiddleware",
    "create_service_app",
    "install",
    "ops_router",
    "problem_response",
    "redis_readiness",
    "settle_garbage_collector",
    "start_service",
    "validation_errors",
]


def install(
    app: FastAPI,
    *,
    readiness: ReadinessCheck,
    liveness: LivenessCheck | None = None,
    max_body_bytes: int = 1_048_576,
    access_log: bool = False,
    on_invalid: InvalidInputHook | None = None,
    request_timeout_seconds: float = 30.0,
    fast_routes: Sequence[BaseRoute] = (),
) -> None:
    """Wire the shared middleware, error mapping and ops routes into a service's app.

    ``fast_routes`` (hot GET or POST routes whose endpoints take only the ``Request``) are served by
    :class:`FastLane`, inside every middleware here.
    """
    install_error_handlers(app, on_invalid)
    # A path with a trailing slash is one the API does not serve: a 404 problem, not a
    # redirect the contract does not list, to a Location built from the client's Host.
    app.router.redirect_slashes = False
    app.include_router(ops_router(readiness, liveness))
    # Innermost: a HEAD reaches the router as a GET (the fast lane serves GET and POST only).
    app.add_middleware(HeadAsGetMiddleware, routes=app.router.routes)
    if fast_routes:
        app.add_middleware(FastLane, routes=fast_routes, exception_handlers=app.exception_handlers)
    # Inside the body limit, which counts the bytes as sent; this one bounds them decoded.
    app.add_middleware(ContentDecodingMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(RequestTimeoutMiddleware, seconds=request_timeout_seconds)
    app.add_middleware(ObservabilityMiddleware, access_log=access_log)


#: What a service's lifespan is: its state comes out as a mapping (see ``web.state``).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Mapping[str, Any]]]


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Lifespan,
    routers: Sequence[APIRouter],
    readiness: ReadinessCheck,
    summary: str | None = None,
    description: str = "",
    docs: bool = True,
    liveness: LivenessCheck | None = None,
    max_body_bytes: int = 1_048_576,
    access_log: bool = False,
    on_invalid: InvalidInputHook | None = None,
    fast_routes: Sequence[BaseRoute] = (),
) -> FastAPI:
    """A service's app, built as every service builds it: versioned by the code, traced when
    an OTLP endpoint is configured, with the shared plumbing (:func:`install`) and its routers.

    ``docs=False`` leaves the documentation's paths out of the routes (they answer 404)."""
    app = FastAPI(
        title=title,
        version=code_version(),
        summary=summary,
        description=description,
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    setup_tracing(app, settings)
    install(
        app,
        readiness=readiness,
        liveness=liveness,
        max_body_bytes=max_body_bytes,
        access_log=access_log,
        on_invalid=on_invalid,
        request_timeout_seconds=settings.request_timeout_seconds,
        fast_routes=fast_routes,
    )
    for router in routers:
        app.include_router(router)
    return app


async def start_service(settings: ServiceSettings) -> RedisClient:
    """What every service does first in its lifespan: logs as configured, its build info
    exported, and its one client of the data tier for the process, whose layout it checks
    (a data tier partitioned otherwise stops the start: :mod:`recsys_shared.layout`)."""
    configure_logging(settings.service_name, level=settings.log_level, json_lines=settings.log_json)
    metrics.BUILD_INFO.info({"service": settings.service_name, "version": code_version()})
    client = await connect(
        settings.redis_dsn,
        command_timeout=settings.redis_timeout_seconds,
        name=settings.service_name,
    )
    try:
        await check_layout(client, settings.partitions)
    except BaseException:
        await client.aclose()
        raise
    return client


#: Young-generation collections every this many allocations (CPython's default is 700).
GC_YOUNG_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Once start-up is done, before the first request (every service, and the benchmark's
    baseline, so that its figures compare like with like).

    What start-up allocated (modules, settings, clients) moves to a generation the collector
    never scans again (``gc.freeze``), and young collections run every 20,000 allocations
    instead of 700: one request allocates hundreds of short-lived objects that reference
    counting frees anyway, so the default collects on nearly every request for nothing
    (+13% cached requests per second at the gateway, measured A/B on the same stack).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
