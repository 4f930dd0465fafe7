"""The feature-store app: HTTP for catalogue writes and snapshots, plus the stream consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from feature_store.catalogue import Catalogue
from feature_store.config import Settings, get_settings
from feature_store.consumer import StreamConsumer
from feature_store.routes import items, snapshots, users
from recsys_shared import code_version, web
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.redis import create_async_redis
from recsys_shared.tracing import FASTAPI_TELEMETRY_OFF, setup_tracing

log = logging.getLogger(__name__)

#: A consumer that has not finished a read for this long is stuck, not idle (reads block 1 s).
CONSUMER_STALE_SECONDS = 30.0


async def _readiness(request: Request) -> dict[str, str]:
    checks = {"redis": await web.redis_readiness(request.state.redis)}
    consumer: StreamConsumer = request.state.consumer
    task: asyncio.Task[None] = request.state.consumer_task
    if task.done():
        checks["consumer"] = "stopped"
    elif time.time() - consumer.last_batch_at > CONSUMER_STALE_SECONDS:
        checks["consumer"] = "stale: no completed read recently"
    else:
        checks["consumer"] = "ok"
    return checks


def _report_consumer_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("stream consumer stopped", exc_info=task.exception())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = web.start_service(settings)
        ephemeral = settings.ephemeral_redis_dsn
        records = (
            create_async_redis(ephemeral, timeout=settings.redis_timeout_seconds)
            if ephemeral
            else None
        )
        consumer = StreamConsumer(client, settings, records=records)
        consumer_task = asyncio.create_task(consumer.run(), name="stream-consumer")
        consumer_task.add_done_callback(_report_consumer_exit)
        web.settle_garbage_collector()
        yield {
            "settings": settings,
            "redis": client,
            "catalogue": Catalogue(client),
            "store": ArtifactStore(settings.artifact_url),
            "consumer": consumer,
            "consumer_task": consumer_task,
        }
        consumer.stop()
        consumer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer_task
        if records is not None:
            await records.aclose()
        await client.aclose()

    app = FastAPI(
        title="recsys feature-store",
        version=code_version(),
        summary="Owns the features: histories, popularity, catalogue; exports snapshots.",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    setup_tracing(app, settings)
    web.install(
        app,
        readiness=_readiness,
        max_body_bytes=4 * 1024 * 1024,
        request_timeout_seconds=settings.request_timeout_seconds,
    )
    for router in (items.router, users.router, snapshots.router):
        app.include_router(router)
    return app
