"""Waiting in tests for something another process (or a background task) does, and running
such a task for the length of a block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], Awaitable[object]], *, within: float = 5.0, interval: float = 0.01
) -> None:
    """Until ``condition()`` is truthy, or fail after ``within`` seconds. Polling, because what
    is awaited happens elsewhere (Redis, another process) and signals nothing."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 - the state lives outside this process
            await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """``work`` running as a task for the block, then cancelled as a service's lifespan
    cancels its loops (an await still blocked in Redis included)."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
