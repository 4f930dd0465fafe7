"""The recommender app: the active model in memory, served over HTTP to the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from contextlib import AsyncExitStack

from fastapi import FastAPI, Request
from threadpoolctl import threadpool_limits

from recommender.config import Settings, get_settings
from recommender.deps import RecommenderState
from recommender.model_store import ModelHolder
from recommender.routes import model, recommendations
from recommender.service import RecommendationService
from recommender.variants import VariantModels
from recsys_shared import web
from recsys_shared.active_version import announcements
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.background import stop_tasks
from recsys_shared.errors import StoreUnavailable
from recsys_shared.experiments.lists import ExperimentLists
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.read_path import start_read_path
from recsys_shared.redis import RedisClient
from recsys_shared.responses import ResponseBuilder
from recsys_shared.web.state import lifespan_state, state_lifespan


async def _readiness(request: Request) -> dict[str, str]:
    state = lifespan_state(request, RecommenderState)
    holder = state.holder
    checks = {"redis": await web.redis_readiness(state.redis)}
    if holder.active_version is not None and holder.current is None:
        checks["model"] = holder.last_error or f"loading version {holder.active_version}"
    else:
        checks["model"] = "ok"
    return checks


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    return web.create_service_app(
        settings,
        title="recsys recommender",
        summary="Serves top-k for users and similar items from the active model (popular items "
        "only as their fallback).",
        lifespan=state_lifespan(functools.partial(_state, settings)),
        routers=[recommendations.router, model.router],
        readiness=_readiness,
        fast_routes=recommendations.router.routes if settings.fast_lane else (),
    )


async def _state(settings: Settings, stack: AsyncExitStack) -> RecommenderState:
    """Everything the routes use, created once; ``stack`` closes it in reverse order."""
    # One request scores one user: BLAS threads would fight the event loop for the cores.
    threadpool_limits(limits=1)
    read_path = await start_read_path(settings, stack)
    client = read_path.main
    holder = await _model_holder(settings, stack, client)
    variants = _variant_models(settings, stack, client, holder)
    responses = ResponseBuilder(
        read_path.features,
        read_path.ephemeral,
        record_ttl_seconds=settings.recommendation_ttl_seconds,
        memory_guard=read_path.shedding_guard,
        experiment_lists=ExperimentLists(
            client, settings.partitions, ttl_seconds=settings.recommendation_ttl_seconds
        ),
    )
    service = RecommendationService(
        responses,
        holder,
        ranking=settings.ranking(),
        variants=variants,
        shadow_cpu_share=settings.shadow_cpu_share,
    )
    if service.shadows is not None:
        stack.push_async_callback(service.shadows.close)
    web.settle_garbage_collector()
    return RecommenderState(client, holder, variants, service)


async def _model_holder(
    settings: Settings, stack: AsyncExitStack, client: RedisClient
) -> ModelHolder:
    """The active model, loaded now if there is one and followed by a watcher task."""
    holder = ModelHolder(
        client,
        ArtifactStore(settings.artifact_url),
        poll_seconds=settings.model_poll_seconds,
        notifications=await announcements(settings, stack),
    )
    with contextlib.suppress(StoreUnavailable):
        # Serve from the first request if a model exists; the watcher retries otherwise.
        await holder.refresh()
    watcher = asyncio.create_task(holder.watch(), name="model-watcher")
    stack.push_async_callback(stop_tasks, watcher)
    return holder


def _variant_models(
    settings: Settings, stack: AsyncExitStack, client: RedisClient, holder: ModelHolder
) -> VariantModels:
    """The running experiment's versions, loaded within a memory bound as it changes."""
    variants = VariantModels(
        holder,
        ExperimentStore(client, settings.partitions),
        memory_limit_bytes=settings.model_memory_limit_mb << 20,
        poll_seconds=settings.model_poll_seconds,
    )
    watcher = asyncio.create_task(variants.watch(), name="variant-watcher")
    stack.push_async_callback(stop_tasks, watcher)
    return variants
