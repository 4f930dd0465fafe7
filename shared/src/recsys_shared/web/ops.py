"""The routes every service serves for its operators: liveness, readiness, metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys_shared import metrics
from recsys_shared.errors import (
    StoreError,
    StoreUnavailable,
)
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import (
    Readiness,
)

#: What the service's dependencies answer: a check name → "ok" or what is wrong.
ReadinessCheck = Callable[[Request], Awaitable[dict[str, str]]]
#: What is wrong with the process itself (a dead background task), or None when it is alive.
LivenessCheck = Callable[[Request], Awaitable[str | None]]


def ops_router(readiness: ReadinessCheck, liveness: LivenessCheck | None = None) -> APIRouter:
    """``/healthz`` (the process works; a failure means "restart me"), ``/readyz`` (its
    dependencies answer), ``/metrics``."""
    router = APIRouter(tags=["operations"])

    @router.get(
        "/healthz",
        summary="Liveness: the process and its background tasks work; a failure means restart",
    )
    async def healthz(request: Request) -> Response:
        problem = await liveness(request) if liveness is not None else None
        if problem is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "failing", "detail": problem}, status_code=503)

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


async def redis_readiness(client: RedisClient) -> str:
    """'ok' when Redis answers a PING within its timeout, else what went wrong."""
    try:
        await client.ping()
    except (StoreUnavailable, StoreError) as error:
        return f"unreachable: {error.detail}"
    return "ok"
