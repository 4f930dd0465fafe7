"""Shedding the writes Redis can do without, before it refuses the ones it cannot.

Redis runs with ``maxmemory-policy noeviction`` (an evicted Celery message or feature would be
lost data): at ``maxmemory`` it refuses every write, events included. The writes that grow with
traffic rather than with data are the served-list records (kept for a day, one per computed
list) and the cached responses, both written at the rate of cache misses: left alone, they are
what fills the memory, and ingestion stops (503) until their TTLs drain them.

A :class:`MemoryGuard` in each serving process reads ``INFO memory`` every few seconds. At the
high-water mark (a share of ``maxmemory``) it sheds those writes (each one counted) until use
falls back below the mark less a margin, so the headroom that remains is the events' and the
features'. A Redis without ``maxmemory`` is never shed for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from recsys_shared.background import repeat, stop_tasks
from recsys_shared.errors import StoreError, StoreUnavailable
from recsys_shared.metrics import (
    EPHEMERAL_WRITES_SHED,
    EPHEMERAL_WRITES_SHEDDING,
    REDIS_MEMORY_USED_RATIO,
)
from recsys_shared.redis import RedisClient

logger = logging.getLogger(__name__)

#: Shedding stops when use is this far below the high-water mark: no flapping at the mark.
RESUME_MARGIN = 0.05

Ephemeral = Literal["record", "cache"]
# Bound once: labels() takes a lock and builds a key on every call.
_SHED = {kind: EPHEMERAL_WRITES_SHED.labels(kind) for kind in ("record", "cache")}


def memory_used_ratio(info: str) -> float | None:
    """``used_memory / maxmemory`` from the text of ``INFO memory``; None without a limit.
    (On a cluster, each primary's INFO: the fullest one decides.)"""
    fields = dict(
        line.split(":", 1) for line in info.splitlines() if ":" in line and line[0] != "#"
    )
    limit = int(fields.get("maxmemory", "0"))
    return int(fields.get("used_memory", "0")) / limit if limit else None


class MemoryGuard:
    """Watches one Redis's memory; ``sheds=False`` only reports it (the main Redis, when the
    cache entries and records live on an ephemeral one with a guard of its own)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        high_water: float,
        poll_seconds: float = 5.0,
        redis_name: str = "main",
        sheds: bool = True,
    ) -> None:
        self.redis = client
        self.high_water = high_water
        self.poll_seconds = poll_seconds
        self.sheds = sheds
        self.shedding = False
        self._ratio = REDIS_MEMORY_USED_RATIO.labels(redis_name)
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watch in the background (a service's lifespan start)."""
        self._watcher = asyncio.create_task(self.watch(), name="memory-guard")

    async def stop(self) -> None:
        await stop_tasks(self._watcher)

    def shed(self, kind: Ephemeral) -> bool:
        """Whether to skip a write of this kind now (counted when skipped)."""
        if self.shedding:
            _SHED[kind].inc()
        return self.shedding

    def observe(self, ratio: float | None) -> None:
        self._ratio.set(ratio or 0.0)
        if not self.sheds:
            return
        if ratio is None:
            self.shedding = False
            EPHEMERAL_WRITES_SHEDDING.set(0)
            return
        was = self.shedding
        if ratio >= self.high_water:
            self.shedding = True
        elif ratio < self.high_water - RESUME_MARGIN:
            self.shedding = False
        if self.shedding != was:
            EPHEMERAL_WRITES_SHEDDING.set(int(self.shedding))
            logger.warning(
                "Redis memory at %.0f%% of maxmemory: %s cache entries and list records",
                ratio * 100,
                "shedding" if self.shedding else "writing again",
            )

    async def check(self) -> None:
        ratios = [
            memory_used_ratio(info) for info in await self.redis.on_primaries("INFO", "memory")
        ]
        limited = [ratio for ratio in ratios if ratio is not None]
        self.observe(max(limited) if limited else None)

    async def watch(self) -> None:
        """Check every ``poll_seconds`` until cancelled; an unreachable Redis keeps the last
        state (its writes fail on their own), as does one that refuses INFO."""
        await repeat(self.check, pause=self.poll_seconds, survives=(StoreUnavailable, StoreError))


def serving_guards(
    main: RedisClient, ephemeral: RedisClient, *, high_water: float
) -> list[MemoryGuard]:
    """A serving process's guards: first the one that sheds, on the Redis that holds the cache
    entries and records; then, when that is not the main Redis, a watch of the main one's
    memory (the events' and features'), so its use is still exported."""
    if ephemeral is main:
        return [MemoryGuard(main, high_water=high_water)]
    return [
        MemoryGuard(ephemeral, high_water=high_water, redis_name="ephemeral"),
        MemoryGuard(main, high_water=high_water, sheds=False),
    ]
