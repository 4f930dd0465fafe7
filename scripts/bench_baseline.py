"""The baseline of `make bench`: a bare FastAPI endpoint that does one Redis GET and returns it.

Run by the benchmark under the same uvicorn flags as the gateway, against the same Redis, so the
gateway's figures can be read as a ratio of what the framework and Redis alone allow.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from recsys_shared.redis import create_async_redis

BASELINE_KEY = "bench:baseline"


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = create_async_redis(os.environ["REDIS_URL"])
        yield {"redis": client}
        await client.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/baseline")
    async def baseline(request: Request) -> Response:
        body = await request.state.redis.get(BASELINE_KEY)
        return Response(body, media_type="application/json")

    return app
