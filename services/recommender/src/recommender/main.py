"""The recommender app: the active model in memory, served over HTTP to the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from threadpoolctl import threadpool_limits

from recommender.config import Settings, get_settings
from recommender.model_store import ModelHolder
from recommender.routes import model, recommendations
from recommender.service import RecommendationService
from recsys_shared import code_version, web
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.memory_guard import serving_guards
from recsys_shared.redis import (
    REDIS_UNAVAILABLE_ERRORS,
    create_multiplexed_redis,
    ephemeral_client,
)
from recsys_shared.tracing import FASTAPI_TELEMETRY_OFF, setup_tracing


async def _readiness(request: Request) -> dict[str, str]:
    holder: ModelHolder = request.state.holder
    checks = {"redis": await web.redis_readiness(request.state.redis)}
    if holder.active_version is not None and holder.current is None:
        checks["model"] = holder.last_error or f"loading version {holder.active_version}"
    else:
        checks["model"] = "ok"
    return checks


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # One request scores one user: BLAS threads would fight the event loop for the cores.
        threadpool_limits(limits=1)
        client = web.start_service(settings)
        holder = ModelHolder(
            client, ArtifactStore(settings.artifact_url), poll_seconds=settings.model_poll_seconds
        )
        with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS):
            # Serve from the first request if a model exists; the watcher retries otherwise.
            await holder.refresh()
        watcher = asyncio.create_task(holder.watch(), name="model-watcher")
        # Features and records on one multiplexed connection; the registry and its
        # notifications stay on the pooled client.
        reads_redis = create_multiplexed_redis(
            settings.redis_dsn, timeout=settings.redis_timeout_seconds
        )
        ephemeral_redis = ephemeral_client(
            settings.ephemeral_redis_dsn, reads_redis, timeout=settings.redis_timeout_seconds
        )
        guards = serving_guards(
            reads_redis, ephemeral_redis, high_water=settings.ephemeral_writes_max_memory_ratio
        )
        for guard in guards:
            guard.start()
        memory_guard = guards[0]
        service = RecommendationService(
            reads_redis,
            holder,
            record_ttl_seconds=settings.recommendation_ttl_seconds,
            memory_guard=memory_guard,
            records=ephemeral_redis,
            ranking=settings.ranking(),
        )
        web.settle_garbage_collector()
        yield {"redis": client, "holder": holder, "service": service}
        for guard in guards:
            await guard.stop()
        # On Python 3.11, asyncio.timeout can swallow a cancellation that lands just before
        # redis-py enters one (its connection checks use timeout(0)): the watcher then loops on
        # and one cancel() would wait forever. Repeat it until the task has ended.
        while not watcher.done():
            watcher.cancel()
            await asyncio.wait({watcher}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if ephemeral_redis is not reads_redis:
            await ephemeral_redis.aclose()
        await reads_redis.aclose()
        await client.aclose()

    app = FastAPI(
        title="recsys recommender",
        version=code_version(),
        summary="Serves top-k for users, similar items and popular items from the active model.",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    setup_tracing(app, settings)
    web.install(
        app,
        readiness=_readiness,
        request_timeout_seconds=settings.request_timeout_seconds,
        fast_routes=recommendations.router.routes,
    )
    app.include_router(recommendations.router)
    app.include_router(model.router)
    return app
