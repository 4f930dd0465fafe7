"""Helpers for the shared package's tests (test modules cannot import each other)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from recsys_shared import keys
from recsys_shared.redis import RedisClient, connect
from recsys_shared.schemas import ModelInfo, ModelStatus
from recsys_shared.testing import eventually

EventFactory = Callable[..., dict[str, Any]]
ModelInfoFactory = Callable[..., ModelInfo]


@pytest.fixture
def make_event() -> EventFactory:
    """A valid event payload as a client sends it; keyword arguments replace fields."""

    def make(**fields: Any) -> dict[str, Any]:
        return {"user_id": "u1", "item_id": "i1", "type": "view", **fields}

    return make


@pytest.fixture
def make_model_info() -> ModelInfoFactory:
    """A registry entry for ``version``, with an artifact unless ``artifact=False``."""

    def make(
        version: int,
        *,
        status: ModelStatus = ModelStatus.CANDIDATE,
        artifact: bool = True,
        snapshot_id: str | None = None,
    ) -> ModelInfo:
        return ModelInfo(
            version=version,
            status=status,
            algorithm="als",
            params={"factors": 8},
            created_at=datetime(2024, 5, 1, 12, version % 60, tzinfo=UTC),
            snapshot_id=snapshot_id or f"1714564800000-{version}",
            metrics={"ndcg@10": 0.1 * version},
            artifact_url=f"file:///artifacts/models/v{version:08d}" if artifact else None,
            checksum="abc" if artifact else None,
        )

    return make


@pytest.fixture
async def subscriber(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client subscribed to the registry's notifications, as the recommenders have one."""
    client = await connect(redis_url, channels=[keys.MODEL_EVENTS_CHANNEL])

    async def subscribed() -> object:
        counts = await client.execute("PUBSUB", "NUMSUB", keys.MODEL_EVENTS_CHANNEL)
        return counts.get(keys.MODEL_EVENTS_CHANNEL)

    # Subscribed once its connection is up: wait for Redis to count the subscriber.
    await eventually(subscribed)
    yield client
    await client.aclose()
