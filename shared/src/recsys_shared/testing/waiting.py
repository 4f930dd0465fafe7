"""Waiting in tests for something another process (or a background task) does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], Awaitable[object]], *, within: float = 5.0, interval: float = 0.01
) -> None:
    """Until ``condition()`` is truthy, or fail after ``within`` seconds. Polling, because what
    is awaited happens elsewhere (Redis, another process) and signals nothing."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 - the state lives outside this process
            await asyncio.sleep(interval)
