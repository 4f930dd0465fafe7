"""The data tier's layout check at start-up: the first service records it, a service set to
another partition count or key layout stops, and a data tier that does not answer is not a
refusal."""

from __future__ import annotations

import logging

import pytest
import redis

from recsys_shared import keys, layout, web
from recsys_shared.layout import LAYOUT_VERSION, LayoutMismatch, check_layout
from recsys_shared.processes import free_port
from recsys_shared.redis import RedisClient, connect
from recsys_shared.schemas import DataLayout
from recsys_shared.settings import ServiceSettings


async def test_the_first_start_records_the_layout_and_the_same_one_passes(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    first = await check_layout(redis_client, keys.Partitions(4))
    again = await check_layout(redis_client, keys.Partitions(4))

    assert first == again == DataLayout(version=LAYOUT_VERSION, partitions=4)
    stored = DataLayout.model_validate_json(inspector.get(keys.DATA_LAYOUT) or "")
    assert stored == first


async def test_another_partition_count_is_refused_naming_both(redis_client: RedisClient) -> None:
    await check_layout(redis_client, keys.Partitions(4))

    with pytest.raises(LayoutMismatch) as refused:
        await check_layout(redis_client, keys.Partitions(12))

    named = [text in refused.value.detail for text in ("over 4", "=12", "set EVENT_PARTITIONS=4")]
    assert named == [True, True, True]


async def test_another_key_layout_is_refused(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    older = DataLayout(version=LAYOUT_VERSION + 1, partitions=1)
    inspector.set(keys.DATA_LAYOUT, older.model_dump_json())

    with pytest.raises(LayoutMismatch) as refused:
        await check_layout(redis_client, keys.Partitions(1))

    assert f"key layout {LAYOUT_VERSION + 1}" in refused.value.detail
    assert inspector.get(keys.DATA_LAYOUT) == older.model_dump_json()  # left as it was


async def test_a_data_tier_that_does_not_answer_is_not_a_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await connect(f"redis://127.0.0.1:{free_port()}", command_timeout=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger=layout.__name__):
            assert await check_layout(client, keys.Partitions(2)) is None
    finally:
        await client.aclose()

    assert "not checked" in caplog.text


async def test_a_service_starting_on_another_layout_stops(
    redis_url: str, inspector: redis.Redis
) -> None:
    recorded = ServiceSettings(redis_url=redis_url, event_partitions=3)  # type: ignore[arg-type]
    client = await web.start_service(recorded)
    await client.aclose()

    other = ServiceSettings(redis_url=redis_url, event_partitions=1)  # type: ignore[arg-type]
    with pytest.raises(LayoutMismatch):
        await web.start_service(other)

    assert DataLayout.model_validate_json(inspector.get(keys.DATA_LAYOUT) or "").partitions == 3
