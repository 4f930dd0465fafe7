"""The gateway app: the system's only public entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from gateway.auth import ApiKeys
from gateway.cache import ResponseCache
from gateway.clients import FeatureStoreClient, RecommenderClient
from gateway.config import Settings, get_settings
from gateway.ingest import EventIngestor
from gateway.rate_limit import RateLimiter
from gateway.rejects import count_rejects
from gateway.routes import (
    drift,
    events,
    items,
    models,
    pipeline,
    recommendations,
    status,
    users,
)
from gateway.serving import ReadService
from gateway.task_queue import TaskQueue
from recsys_shared import code_version, web
from recsys_shared.features import FeatureReader
from recsys_shared.http_client import HttpClient
from recsys_shared.memory_guard import serving_guards
from recsys_shared.redis import create_multiplexed_redis, ephemeral_client
from recsys_shared.registry import ModelRegistry
from recsys_shared.tracing import FASTAPI_TELEMETRY_OFF, setup_tracing

DESCRIPTION = """
The public API of the recsys reference recommendation system.

Authenticate with the `X-API-Key` header. Keys have a role: `client` (recommendations, events,
catalogue), `viewer` (the status page only) or `admin` (everything: also users, models, tasks,
pipeline, drift); each operation's security requirement names the role it needs. Errors are
RFC 9457 problem details (`application/problem+json`).
"""


async def _readiness(request: Request) -> dict[str, str]:
    return {"redis": await web.redis_readiness(request.state.redis)}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_keys = ApiKeys(settings.api_keys.get_secret_value())  # fails start-up on a bad spec

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = web.start_service(settings)
        # The read path (cache, rate limit, features) on one multiplexed connection.
        reads_redis = create_multiplexed_redis(
            settings.redis_dsn, timeout=settings.redis_timeout_seconds
        )
        ephemeral_redis = ephemeral_client(
            settings.ephemeral_redis_dsn, reads_redis, timeout=settings.redis_timeout_seconds
        )
        recommender_http = HttpClient(
            timeout=settings.recommender_timeout_seconds, max_connections_per_origin=100
        )
        feature_store_http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.feature_store_timeout_seconds),
        )
        recommenders = RecommenderClient(
            recommender_http,
            settings.recommender_urls,
            failures=settings.breaker_failures,
            reset_seconds=settings.breaker_reset_seconds,
        )
        tasks = TaskQueue(
            client,
            settings.redis_dsn,
            visibility_timeout_seconds=settings.broker_visibility_timeout_seconds,
            record_ttl_seconds=settings.task_record_ttl_seconds,
        )
        guards = serving_guards(
            reads_redis, ephemeral_redis, high_water=settings.ephemeral_writes_max_memory_ratio
        )
        for guard in guards:
            guard.start()
        memory_guard = guards[0]
        web.settle_garbage_collector()
        yield {
            "settings": settings,
            "redis": client,
            "api_keys": api_keys,
            "rate_limiter": RateLimiter(reads_redis, per_second=settings.rate_limit_per_second),
            "features": FeatureReader(reads_redis),
            "reads": ReadService(
                reads_redis,
                recommenders,
                ResponseCache(
                    reads_redis,
                    ttl_seconds=settings.cache_ttl_seconds,
                    memory_guard=memory_guard,
                    entries=ephemeral_redis,
                ),
                record_ttl_seconds=settings.recommendation_ttl_seconds,
                memory_guard=memory_guard,
                records=ephemeral_redis,
            ),
            "ingestor": EventIngestor(
                client,
                dedup_ttl_seconds=settings.dedup_ttl_seconds,
                max_backlog=settings.max_stream_backlog,
            ),
            "feature_store": FeatureStoreClient(feature_store_http, settings.feature_store_url),
            "tasks": tasks,
            "registry": ModelRegistry(client),
        }
        for guard in guards:
            await guard.stop()
        tasks.close()
        await recommender_http.aclose()
        await feature_store_http.aclose()
        if ephemeral_redis is not reads_redis:
            await ephemeral_redis.aclose()
        await reads_redis.aclose()
        await client.aclose()

    app = FastAPI(
        title="recsys API",
        version=code_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    setup_tracing(app, settings)
    web.install(
        app,
        readiness=_readiness,
        max_body_bytes=settings.max_body_bytes,
        access_log=settings.access_log,
        on_invalid=count_rejects,
        request_timeout_seconds=settings.request_timeout_seconds,
        fast_routes=recommendations.router.routes,
    )
    if settings.cors_origins:
        # Browsers may call the API only from these origins; none are allowed by default.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    for router in (
        events.router,
        recommendations.router,
        items.router,
        users.router,
        models.router,
        pipeline.router,
        drift.router,
        status.router,
    ):
        app.include_router(router)
    return app
