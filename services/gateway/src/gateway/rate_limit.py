"""Requests per second per API key, without a Redis write on the request path.

Each gateway replica counts its own requests per key in the current second, in process; every
``sync_seconds`` it adds what it counted to a per-key, per-second counter on the ephemeral Redis
(never the Redis that fsyncs every write) and learns from the total what the other replicas
counted. A request is refused when its replica's count plus the others' last known count passes
the limit: exact for one replica, and at most ``sync_seconds`` behind the others' traffic with
several. Without an ephemeral Redis, or while it does not answer, each replica enforces the limit
on its own traffic only: a read never turns into an error because Redis refuses writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from gateway import metrics
from recsys_shared import keys
from recsys_shared.background import repeat, stop_tasks
from recsys_shared.errors import RateLimited, RecsysError
from recsys_shared.redis import RedisClient

log = logging.getLogger(__name__)


class RateLimiter:
    """A fixed one-second window per key, shared by the replicas through ``shared``."""

    def __init__(
        self, shared: RedisClient | None, *, per_second: int, sync_seconds: float = 0.1
    ) -> None:
        self.shared = shared
        self.per_second = per_second
        self.sync_seconds = sync_seconds
        self._second = 0
        self._counts: Counter[str] = Counter()  # this replica, this second
        self._unsynced: Counter[str] = Counter()  # of those, not yet added to the shared total
        self._others: Counter[str] = Counter()  # the other replicas, as last seen
        self._syncer: asyncio.Task[None] | None = None

    async def check(self, key_id: str) -> None:
        """Count a request of the key; raise :class:`RateLimited` past the limit."""
        if self.per_second <= 0:
            return
        self._roll(int(time.time()))
        self._counts[key_id] += 1
        self._unsynced[key_id] += 1
        if self._counts[key_id] + self._others[key_id] > self.per_second:
            metrics.RATE_LIMITED.inc()
            raise RateLimited(
                f"More than {self.per_second} requests in one second with this API key.",
                retry_after=1,
            )

    def _roll(self, second: int) -> None:
        if second != self._second:
            self._second = second
            self._counts.clear()
            self._unsynced.clear()
            self._others.clear()

    def start(self) -> None:
        if self.shared is not None and self.per_second > 0:
            self._syncer = asyncio.create_task(self._sync_forever(), name="rate-limit-sync")

    async def stop(self) -> None:
        await stop_tasks(self._syncer)

    async def _sync_forever(self) -> None:
        await asyncio.sleep(self.sync_seconds)  # nothing is counted yet at start-up
        await repeat(
            self.sync, pause=self.sync_seconds, survives=(RecsysError,), on_error=_kept_local
        )

    async def sync(self) -> None:
        """Add this replica's new counts to the shared totals and read the others' back."""
        if self.shared is None or not self._unsynced:
            return
        second, deltas = self._second, dict(self._unsynced)
        self._unsynced.clear()
        commands: list[tuple[str | int, ...]] = []
        for key_id, delta in deltas.items():
            commands.append(("INCRBY", keys.rate_limit(key_id, second), delta))
            commands.append(("EXPIRE", keys.rate_limit(key_id, second), 2))
        replies = await self.shared.execute_many(commands)
        if second != self._second:
            return  # the second is over: its totals no longer matter
        for (key_id, _), total in zip(deltas.items(), replies[::2], strict=True):
            self._others[key_id] = max(int(total) - self._counts[key_id], 0)


def _kept_local(error: RecsysError) -> None:
    # The limit stays local until Redis answers again.
    log.debug("rate-limit counters not shared: %s", error.detail)
