"""One training at a time across every worker: a lock in Redis, renewed while held.

The training runs its CPU work in a thread while the event loop renews the lock every third of
its time to live. A renewal that finds the lock gone (it expired, another worker took it), or
none succeeding for a whole time to live (Redis unreachable), marks the lock lost; the training
checks before every step that writes and stops (the task retries later). The renewer notices
late (up to a third of the time to live, more while Redis is slow), so the registry write itself
is fenced: it checks in the same script that the lock still holds this training's token
(:meth:`HeldLock.fenced`), and two trainings never publish at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from recsys_shared import keys
from recsys_shared.errors import RecsysError, StoreUnavailable
from recsys_shared.locks import LockLost, RedisLock
from recsys_shared.redis import RedisClient
from retraining_worker import metrics

log = logging.getLogger(__name__)


class TrainingLocked(RecsysError):
    """Another training holds the lock; the task should try again later."""


class TrainingLockLost(TrainingLocked):
    """The lock expired under this training (renewals failed): another training may run, so
    this one stops before publishing anything; the task tries again later."""


@dataclass
class HeldLock:
    """The training lock while a training holds it; :meth:`check` before each step that
    writes, so a training whose lock was lost never publishes."""

    lock: RedisLock
    lost: bool = False

    def check(self) -> None:
        if self.lost:
            raise TrainingLockLost(
                "The training lock was lost (not renewed in time); stopping this training."
            )

    def mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            metrics.TRAINING_LOCK_LOST.inc()
            log.error("the training lock was lost; this training will not publish")

    @contextlib.contextmanager
    def fenced(self) -> Iterator[str]:
        """Around a registry write: yields the token the write is checked against (the lock
        may expire between :meth:`check` and the write, before the renewer notices), and
        turns the registry's refusal into :class:`TrainingLockLost`."""
        self.check()
        try:
            yield self.lock.token
        except LockLost as refused:
            self.mark_lost()
            raise TrainingLockLost(f"{refused.detail} Stopping this training.") from refused


@asynccontextmanager
async def training_lock(client: RedisClient, ttl_seconds: int) -> AsyncIterator[HeldLock]:
    """Hold the training lock for the block's duration (see the module docstring)."""
    lock = RedisLock(client, keys.TRAINING_LOCK, ttl_seconds=ttl_seconds)
    if not await lock.acquire():
        raise TrainingLocked("Another training is running.")
    held = HeldLock(lock)
    renewer = asyncio.create_task(_keep_renewing(held, ttl_seconds), name="training-lock")
    try:
        yield held
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if not held.lost:
            with contextlib.suppress(RecsysError):
                await lock.release()


async def _keep_renewing(held: HeldLock, ttl_seconds: int) -> None:
    renewed_at = time.monotonic()
    while True:
        await asyncio.sleep(ttl_seconds / 3)
        try:
            if not await held.lock.renew():
                break
            renewed_at = time.monotonic()
        except RecsysError as error:  # unreachable, or any refusal: retried until the TTL
            log.warning("training lock not renewed: %s", error.detail)
            if time.monotonic() - renewed_at >= ttl_seconds:
                break
    held.mark_lost()


__all__ = ["HeldLock", "StoreUnavailable", "TrainingLockLost", "TrainingLocked", "training_lock"]
