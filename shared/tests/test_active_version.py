"""Following the registry's active version in process: an announcement is learnt at once,
and polling finds a version whose announcement was missed."""

from __future__ import annotations

import asyncio
from typing import Any

from recsys_shared.active_version import ActiveVersion
from recsys_shared.background import stop_tasks
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.testing import eventually


async def _following(active: ActiveVersion, version: int) -> None:
    async def current() -> bool:
        return active.current == version

    await eventually(current, within=5)


async def test_an_announced_version_is_learnt_without_waiting_for_the_poll(
    redis_client: RedisClient, subscriber: RedisClient, make_model_info: Any
) -> None:
    registry = ModelRegistry(redis_client)
    active = ActiveVersion(registry, poll_seconds=3600, notifications=subscriber)
    await active.refresh()
    assert active.current is None
    follower = asyncio.create_task(active.follow())
    try:
        await registry.publish(make_model_info(1), reason="first")
        await _following(active, 1)
        await registry.publish(make_model_info(2), reason="second")
        await _following(active, 2)
        await registry.activate(1, "rollback")
        await _following(active, 1)
    finally:
        await stop_tasks(follower)


async def test_without_announcements_the_version_is_polled(
    redis_client: RedisClient, make_model_info: Any
) -> None:
    registry = ModelRegistry(redis_client)
    active = ActiveVersion(registry, poll_seconds=0.05)
    follower = asyncio.create_task(active.follow())
    try:
        await registry.publish(make_model_info(3), reason="first")
        await _following(active, 3)  # possibly seen by follow()'s first refresh
        await registry.publish(make_model_info(4), reason="second")
        await _following(active, 4)  # seen by polling only: the first refresh is behind
    finally:
        await stop_tasks(follower)
