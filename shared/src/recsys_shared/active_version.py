"""The registry's active model version, followed by a process that must not read it per request.

Activation announces the new version on the registry's channel (``lua/activate.lua``), as
the catalogue announces an item's removal (``feature_store/lua/write_item.lua``); a
follower refreshes on every announcement and at least every ``poll_seconds``, the fallback
for a message missed while disconnected. The recommenders load the version they follow
(``recommender.model_store``); the gateway checks its cached lists against it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from recsys_shared import keys
from recsys_shared.background import repeat
from recsys_shared.errors import StoreUnavailable
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.settings import ServiceSettings

log = logging.getLogger(__name__)


async def announcements(settings: ServiceSettings, stack: AsyncExitStack) -> RedisClient:
    """A client subscribed to the registry's channel; ``stack`` closes it."""
    client = await connect(
        settings.redis_dsn,
        command_timeout=settings.redis_timeout_seconds,
        name=f"{settings.service_name}-announcements",
        channels=[keys.MODEL_EVENTS_CHANNEL],
    )
    stack.push_async_callback(client.aclose)
    return client


async def follow_announcements(
    refresh: Callable[[], Awaitable[object]],
    *,
    notifications: RedisClient | None,
    poll_seconds: float,
    what: str,
) -> None:
    """Run ``refresh`` forever: on every announcement, and at least every ``poll_seconds``;
    while Redis does not answer, say so (``what`` names the follower) and try again."""
    await repeat(
        refresh,
        pause=lambda: next_announcement(notifications, poll_seconds),
        survives=(StoreUnavailable,),
        on_error=lambda error: log.warning("%s waiting for redis: %s", what, error.detail),
    )


async def next_announcement(notifications: RedisClient | None, poll_seconds: float) -> None:
    """Until a version is announced on ``notifications`` (a client subscribed to the
    registry's channel), or ``poll_seconds`` pass."""
    if notifications is None:
        await asyncio.sleep(poll_seconds)
        return
    try:
        async with asyncio.timeout(poll_seconds):
            await notifications.next_message()
    except TimeoutError:
        return
    except StoreUnavailable:
        await asyncio.sleep(poll_seconds)


class ActiveVersion:
    """The active version as last read (``None``: none yet, or Redis not reached yet)."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        poll_seconds: float,
        notifications: RedisClient | None = None,
    ) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.notifications = notifications
        self.current: int | None = None

    async def refresh(self) -> None:
        self.current = await self.registry.active_version()

    async def follow(self, *others: Callable[[], Awaitable[object]]) -> None:
        """Run forever: refresh on every announcement, and at least every ``poll_seconds``;
        so are ``others``, values the same announcements concern (the gateway's count of
        catalogue removals)."""

        async def refresh() -> None:
            await self.refresh()
            for other in others:
                await other()

        await follow_announcements(
            refresh,
            notifications=self.notifications,
            poll_seconds=self.poll_seconds,
            what="active version follower",
        )
