"""The feature-store app: HTTP for catalogue writes, erasure, dead letters and snapshots, plus
the partitions' readers and the housekeeping jobs in the background."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI, Request

from feature_store.catalogue import Catalogue
from feature_store.config import Settings, get_settings
from feature_store.consumer import StreamConsumer
from feature_store.deps import FeatureStoreState
from feature_store.erasure import Eraser
from feature_store.housekeeping import Housekeeping
from feature_store.routes import dead_letters, items, snapshots, users
from recsys_shared import web
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.background import stop_tasks
from recsys_shared.durability import check_durability
from recsys_shared.redis import connect
from recsys_shared.web.state import lifespan_state, state_lifespan

log = logging.getLogger(__name__)


async def _readiness(request: Request) -> dict[str, str]:
    state = lifespan_state(request, FeatureStoreState)
    checks = {"redis": await web.redis_readiness(state.redis)}
    problem = _consumer_problem(state)
    checks["consumer"] = problem or "ok"
    return checks


def _consumer_problem(state: FeatureStoreState) -> str | None:
    if state.consumer_task.done():
        return "stopped"
    silent = time.time() - max(state.consumer.last_read_at, state.started_at)
    if silent > state.settings.consumer_stale_seconds:
        return f"stale: no completed read for {silent:.0f} s"
    return None


async def _liveness(request: Request) -> str | None:
    """Fails when the readers died, or made no read for ``consumer_stale_seconds`` while Redis
    answers: a stuck replica is restarted, but not every replica during a Redis outage."""
    state = lifespan_state(request, FeatureStoreState)
    problem = _consumer_problem(state)
    if problem is None or problem == "stopped":
        return problem
    redis_state = await web.redis_readiness(state.redis)
    return problem if redis_state == "ok" else None


def _background(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(_report_exit)
    return task


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    return web.create_service_app(
        settings,
        title="recsys feature-store",
        summary="Owns the features: histories, popularity, catalogue; exports snapshots.",
        lifespan=state_lifespan(functools.partial(_state, settings)),
        routers=[items.router, users.router, snapshots.router, dead_letters.router],
        readiness=_readiness,
        liveness=_liveness,
        max_body_bytes=4 * 1024 * 1024,
    )


async def _state(settings: Settings, stack: AsyncExitStack) -> FeatureStoreState:
    """The partitions' readers and housekeeping started, and what the routes use; ``stack``
    stops and closes it in reverse order."""
    client = await web.start_service(settings)
    stack.push_async_callback(client.aclose)
    await check_durability(client, settings, what="REDIS_URL", replicas=settings.durable_replicas)
    ephemeral = client
    if settings.ephemeral_redis_dsn:
        ephemeral = await connect(
            settings.ephemeral_redis_dsn, command_timeout=settings.redis_timeout_seconds
        )
        stack.push_async_callback(ephemeral.aclose)
    consumer = StreamConsumer(client, settings, records=ephemeral)
    eraser = Eraser(
        client,
        settings.partitions,
        ephemeral=ephemeral,
        resweep_seconds=settings.erasure_resweep_seconds,
    )
    stack.push_async_callback(eraser.aclose)
    housekeeping = Housekeeping(client, settings, consumer, eraser)
    consumer_task = _background(consumer.run(), "stream-consumer")
    housekeeping_task = _background(housekeeping.run(), "housekeeping")
    stack.push_async_callback(stop_tasks, consumer_task, housekeeping_task)
    web.settle_garbage_collector()
    return FeatureStoreState(
        settings=settings,
        redis=client,
        catalogue=Catalogue(client),
        eraser=eraser,
        store=ArtifactStore(settings.artifact_url),
        consumer=consumer,
        consumer_task=consumer_task,
        started_at=time.time(),
    )
