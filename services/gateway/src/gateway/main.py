"""The gateway app: the system's only public entry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from contextlib import AsyncExitStack

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from gateway.auth import ApiKeys
from gateway.breaker import CircuitBreaker
from gateway.cache import CatalogueRemovals, ResponseCache
from gateway.clients import FeatureStoreClient, RecommenderClient
from gateway.config import Settings, get_settings
from gateway.deps import GatewayState
from gateway.errors import document_problems
from gateway.experiments import ExperimentRuntime
from gateway.ingest import EventIngestor
from gateway.rate_limit import RateLimiter
from gateway.rejects import on_invalid_input
from gateway.replicas import Replicas
from gateway.routes import (
    drift,
    events,
    experiments,
    items,
    models,
    pipeline,
    recommendations,
    status,
    users,
)
from gateway.serving import ReadService
from gateway.task_queue import TaskQueue
from recsys_shared import web
from recsys_shared.active_version import ActiveVersion, announcements
from recsys_shared.background import stop_tasks
from recsys_shared.durability import check_durability
from recsys_shared.errors import StoreUnavailable
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.fastpath.http_client import HttpClient
from recsys_shared.read_path import start_read_path
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.responses import ResponseBuilder
from recsys_shared.web.state import lifespan_state, state_lifespan

#: How long an idle connection to the feature-store is reused: well under uvicorn's keep-alive
#: timeout (5 s), so the gateway never sends on a connection the server is about to close.
FEATURE_STORE_KEEPALIVE_SECONDS = 2.0

DESCRIPTION = """
The public API of the recsys reference recommendation system.

Authenticate with the `X-API-Key` header. Keys have a role: `client` (recommendations, events,
catalogue), `viewer` (the status page only) or `admin` (everything: also users, models, tasks,
pipeline, drift); each operation's security requirement names the role it needs. Errors are
RFC 9457 problem details (`application/problem+json`).
"""


async def _readiness(request: Request) -> dict[str, str]:
    return {"redis": await web.redis_readiness(lifespan_state(request, GatewayState).redis)}


async def _clients(
    settings: Settings, stack: AsyncExitStack, main: RedisClient
) -> dict[str, RedisClient]:
    """The gateway's Redis clients beside the read path's: the broker, and the ingest's own
    connection when it waits for replicas."""
    timeout = settings.redis_timeout_seconds

    async def opened(url: str, name: str) -> RedisClient:
        client = await connect(url, command_timeout=timeout, name=name)
        stack.push_async_callback(client.aclose)
        return client

    return {
        "broker": (
            await opened(settings.broker_dsn, "gateway-broker")
            if settings.broker_dsn != settings.redis_dsn
            else main
        ),
        # WAIT holds the connection it runs on: the read path must not queue behind it.
        "ingest": (
            await opened(settings.redis_dsn, "gateway-ingest")
            if settings.durable_replicas
            else main
        ),
    }


async def _check_durability(settings: Settings, main: RedisClient, broker: RedisClient) -> None:
    """The data tier's durability, and the broker's where it is a Redis of its own (nothing
    waits for the broker's replicas, so only its AOF counts)."""
    await check_durability(main, settings, what="REDIS_URL", replicas=settings.durable_replicas)
    if broker is not main:
        await check_durability(broker, settings, what="CELERY_BROKER_URL", replicas=None)


async def _followed(
    settings: Settings, stack: AsyncExitStack, main: RedisClient, registry: ModelRegistry
) -> tuple[ActiveVersion, CatalogueRemovals]:
    """The active version and the catalogue's removals, followed in process (the cache checks
    every hit against both), refreshed on every announcement of either."""
    active = ActiveVersion(
        registry,
        poll_seconds=settings.model_poll_seconds,
        notifications=await announcements(settings, stack),
    )
    removals = CatalogueRemovals(main)
    with contextlib.suppress(StoreUnavailable):  # cache hits from the first request on
        await active.refresh()
        await removals.refresh()
    follower = asyncio.create_task(active.follow(removals.refresh), name="active-version")
    stack.push_async_callback(stop_tasks, follower)
    return active, removals


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_keys = ApiKeys(settings.api_keys.get_secret_value())  # fails start-up on a bad spec

    app = web.create_service_app(
        settings,
        title="recsys API",
        description=DESCRIPTION,
        lifespan=state_lifespan(functools.partial(_state, settings, api_keys)),
        routers=[
            events.router,
            recommendations.router,
            items.router,
            users.router,
            models.router,
            experiments.router,
            pipeline.router,
            drift.router,
            status.router,
        ],
        readiness=_readiness,
        docs=settings.docs_enabled,
        max_body_bytes=settings.max_body_bytes,
        access_log=settings.access_log,
        on_invalid=on_invalid_input,
        fast_routes=recommendations.router.routes if settings.fast_lane else (),
    )
    document_problems(app)
    if settings.cors_origins:
        # Browsers may call the API only from these origins; none are allowed by default.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app


async def _recommender_client(settings: Settings, stack: AsyncExitStack) -> RecommenderClient:
    """The keep-alive client to the recommender replicas, with their circuit breakers; the
    replicas looked up again every ``RECOMMENDER_DISCOVERY_SECONDS`` when it is set."""
    http = HttpClient(timeout=settings.recommender_timeout_seconds, max_connections_per_origin=100)
    stack.push_async_callback(http.aclose)
    replicas = Replicas(
        settings.recommender_urls,
        failures=settings.breaker_failures,
        reset_seconds=settings.breaker_reset_seconds,
    )
    if every := settings.recommender_discovery_seconds:
        await replicas.refresh()
        refresher = asyncio.create_task(replicas.keep_refreshing(every), name="replicas")
        stack.push_async_callback(stop_tasks, refresher)
    return RecommenderClient(http, replicas)


async def _feature_store_client(settings: Settings, stack: AsyncExitStack) -> FeatureStoreClient:
    http = await stack.enter_async_context(
        httpx.AsyncClient(
            timeout=httpx.Timeout(settings.feature_store_timeout_seconds),
            limits=httpx.Limits(keepalive_expiry=FEATURE_STORE_KEEPALIVE_SECONDS),
        )
    )
    return FeatureStoreClient(http, settings.feature_store_url)


def _task_queue(settings: Settings, stack: AsyncExitStack, broker: RedisClient) -> TaskQueue:
    tasks = TaskQueue(
        broker,
        settings.broker_dsn,
        visibility_timeout_seconds=settings.broker_visibility_timeout_seconds,
        record_ttl_seconds=settings.task_record_ttl_seconds,
    )
    stack.callback(tasks.close)
    return tasks


def _rate_limiter(settings: Settings, stack: AsyncExitStack, ephemeral: RedisClient) -> RateLimiter:
    """Counts per key in process, shared through the ephemeral Redis when there is one."""
    limiter = RateLimiter(
        ephemeral if settings.ephemeral_redis_dsn else None,
        per_second=settings.rate_limit_per_second,
        sync_seconds=settings.rate_limit_sync_seconds,
    )
    limiter.start()
    stack.push_async_callback(limiter.stop)
    return limiter


def _experiment_runtime(
    settings: Settings, stack: AsyncExitStack, main: RedisClient, registry: ModelRegistry
) -> ExperimentRuntime:
    runtime = ExperimentRuntime(
        ExperimentStore(main, settings.partitions),
        registry,
        refresh_seconds=settings.experiment_refresh_seconds,
        check_seconds=settings.experiment_check_seconds,
        tau=settings.experiment_tau,
        alpha=settings.experiment_alpha,
        retention_days=settings.experiment_retention_days,
    )
    runtime.start()
    stack.push_async_callback(runtime.stop)
    return runtime


def _event_ingestor(settings: Settings, client: RedisClient) -> EventIngestor:
    return EventIngestor(
        client,
        settings.partitions,
        window_seconds=settings.idempotency_window_seconds,
        max_backlog=settings.max_stream_backlog,
        replicas=settings.durable_replicas,
        replicas_timeout_ms=settings.durable_replicas_timeout_ms,
    )


async def _state(settings: Settings, api_keys: ApiKeys, stack: AsyncExitStack) -> GatewayState:
    """Everything the routes use, created once; ``stack`` closes it in reverse order."""
    read_path = await start_read_path(settings, stack)
    main, ephemeral = read_path.main, read_path.ephemeral
    clients = await _clients(settings, stack, main)
    await _check_durability(settings, main, clients["broker"])
    recommenders = await _recommender_client(settings, stack)
    feature_store = await _feature_store_client(settings, stack)
    tasks = _task_queue(settings, stack, clients["broker"])
    limiter = _rate_limiter(settings, stack, ephemeral)
    registry = ModelRegistry(main)
    cache = ResponseCache(
        ephemeral,
        settings.partitions,
        *await _followed(settings, stack, main, registry),
        ttl_seconds=settings.cache_ttl_seconds,
        memory_guard=read_path.shedding_guard,
        breaker=CircuitBreaker(
            "cache",
            failures=settings.breaker_failures,
            reset_seconds=settings.breaker_reset_seconds,
        ),
    )
    experiment_runtime = _experiment_runtime(settings, stack, main, registry)
    responses = ResponseBuilder(
        read_path.features,
        ephemeral,
        record_ttl_seconds=settings.recommendation_ttl_seconds,
        memory_guard=read_path.shedding_guard,
    )
    ingestor = _event_ingestor(settings, clients["ingest"])
    web.settle_garbage_collector()
    return GatewayState(
        settings=settings,
        redis=main,
        api_keys=api_keys,
        rate_limiter=limiter,
        features=read_path.features,
        reads=ReadService(responses, recommenders, cache, experiments=experiment_runtime),
        experiments=experiment_runtime,
        ingestor=ingestor,
        feature_store=feature_store,
        tasks=tasks,
        registry=registry,
    )
