"""The baseline of `make bench`: a bare FastAPI endpoint that does one Redis GET and returns it.

Run by the benchmark under the same uvicorn flags as the gateway, against the same Redis, with
the same Redis client as the services (valkey-glide, through ``recsys_shared.redis``), so the
gateway's figures read as a ratio of what the framework and Redis alone allow. A second route
does the same GET through redis-py's asyncio client: the baseline the targets were first set
against, kept so a change of client shows in the ratios instead of moving the yardstick.

A third route, ``/baseline/two-hop``, asks a second instance of this app (``NEXT_HOP_URL``) for
its redis-py route through the client the gateway calls the recommenders with, and returns the
answer: two services and no work, the most an uncached list through the gateway and a
recommender could reach.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
from fastapi import FastAPI, Request, Response

from recsys_shared import web
from recsys_shared.fastpath.http_client import HttpClient, Origin
from recsys_shared.redis import connect
from recsys_shared.tracing import FASTAPI_TELEMETRY_OFF

BASELINE_KEY = "bench:baseline"


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = await connect(os.environ["REDIS_URL"])
        pooled = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"], max_connections=100)
        http = HttpClient(timeout=10)
        next_hop = Origin.from_url(os.environ.get("NEXT_HOP_URL", "http://127.0.0.1:9"))
        web.settle_garbage_collector()
        yield {"redis": client, "pooled": pooled, "http": http, "next_hop": next_hop}
        await client.aclose()
        await pooled.aclose()
        await http.aclose()

    # FastAPI configured as the services configure it (its own telemetry off).
    app = FastAPI(lifespan=lifespan, telemetry=FASTAPI_TELEMETRY_OFF)

    @app.get("/baseline")
    async def baseline(request: Request) -> Response:
        body = await request.state.redis.execute("GET", BASELINE_KEY)
        return Response(body, media_type="application/json")

    @app.get("/baseline/redis-py")
    async def baseline_redis_py(request: Request) -> Response:
        body = await request.state.pooled.get(BASELINE_KEY)
        return Response(body, media_type="application/json")

    @app.get("/baseline/two-hop")
    async def baseline_two_hop(request: Request) -> Response:
        answer = await request.state.http.get(request.state.next_hop, "/baseline/redis-py")
        return Response(answer.body, status_code=answer.status, media_type="application/json")

    return app
