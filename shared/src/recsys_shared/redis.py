"""Redis client factories: the one place that decides timeouts, retries and pooling.

Every command has a socket timeout so a slow Redis surfaces as an error within a bound instead of a
hung request. Retries are few and short: every write the system makes is idempotent (dedup markers,
applied markers, absolute SETs), so a retried command whose first attempt did land is harmless.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from recsys_shared.errors import StoreUnavailable
from recsys_shared.multiplexed import MultiplexedRedis

#: Errors that mean "Redis did not answer": mapped to 503 + Retry-After at the HTTP edge.
REDIS_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def is_out_of_memory(error: BaseException) -> bool:
    """Redis at ``maxmemory`` with ``noeviction`` refuses writes: a retryable unavailability."""
    # redis-py raises OutOfMemoryError and strips the "OOM" code from the message; a script's
    # error may still carry it, so both are recognised.
    if isinstance(error, redis.exceptions.OutOfMemoryError):
        return True
    return isinstance(error, redis.exceptions.ResponseError) and (
        str(error).startswith("OOM") or "maxmemory" in str(error)
    )


def _options(timeout: float, max_connections: int | None) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        "retry_on_error": [redis.exceptions.ConnectionError],
        "max_connections": max_connections,
        "decode_responses": True,
    }


def create_async_redis(
    url: str, *, timeout: float = 2.0, max_connections: int | None = 200
) -> aioredis.Redis:
    """An asyncio client with string responses; create once per process in the lifespan."""
    client: aioredis.Redis = aioredis.from_url(url, **_options(timeout, max_connections))
    return client


def create_multiplexed_redis(url: str, *, timeout: float = 2.0) -> MultiplexedRedis:
    """The read path's client: one connection per process shared by every request (see
    ``recsys_shared.multiplexed``), with the same per-command timeout."""
    return MultiplexedRedis(url, timeout=timeout)


def ephemeral_client(
    url: str | None, main: MultiplexedRedis, *, timeout: float
) -> MultiplexedRedis:
    """Where cache entries and served-list records go: a Redis of their own when
    ``EPHEMERAL_REDIS_URL`` names one (no fsync on every write there: losing them costs a
    recomputed list or an unattributed click, not an event), else the main connection."""
    return MultiplexedRedis(url, timeout=timeout) if url else main


def create_redis(
    url: str, *, timeout: float = 5.0, max_connections: int | None = 50
) -> redis.Redis:
    """A blocking client for the Celery worker and scripts."""
    client: redis.Redis = redis.from_url(url, **_options(timeout, max_connections))
    return client


def store_unavailable(error: BaseException) -> StoreUnavailable:
    """The domain error for a Redis failure, naming what went wrong without internals."""
    if is_out_of_memory(error):
        return StoreUnavailable(
            "The store is at its memory limit and refuses writes.", retry_after=5
        )
    return StoreUnavailable(f"The store did not answer ({type(error).__name__}).", retry_after=1)
