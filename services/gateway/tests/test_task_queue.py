"""Enqueueing a task through the API, against a real Redis as the broker: its record is written
first, so a failure on either side leaves no task without a record and no record without a
task, and the client's retry after the 503 makes the only task."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from typing import Any

import kombu.exceptions
import pytest
import redis

from gateway.task_queue import TaskQueue
from recsys_shared import keys
from recsys_shared.errors import StoreOutOfMemory, StoreUnavailable
from recsys_shared.redis import RedisClient
from recsys_shared.tasks import TRAIN_MODEL, TRAINING_QUEUE


@pytest.fixture
async def queue(redis_client: RedisClient, redis_url: str) -> AsyncIterator[TaskQueue]:
    tasks = TaskQueue(
        redis_client, redis_url, visibility_timeout_seconds=3600, record_ttl_seconds=600
    )
    yield tasks
    tasks.close()


def _queued_ids(inspector: redis.Redis) -> list[str]:
    return [
        json.loads(message)["headers"]["id"] for message in inspector.lrange(TRAINING_QUEUE, 0, -1)
    ]


async def test_a_task_is_recorded_and_queued_under_one_id(
    queue: TaskQueue, inspector: redis.Redis
) -> None:
    task_id = await queue.send(TRAIN_MODEL, {"force": True})

    assert _queued_ids(inspector) == [task_id]
    assert inspector.get(keys.task_record(task_id)) == TRAIN_MODEL
    assert 0 < inspector.ttl(keys.task_record(task_id)) <= 600
    assert (await queue.state(task_id)).state == "PENDING"


async def test_a_record_that_cannot_be_written_enqueues_nothing(
    queue: TaskQueue, inspector: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(*args: Any) -> None:
        raise StoreOutOfMemory("Redis is at its memory limit.", retry_after=5)

    monkeypatch.setattr(queue.redis, "execute", full)

    with pytest.raises(StoreUnavailable):
        await queue.send(TRAIN_MODEL, {})

    assert _queued_ids(inspector) == []  # the client's retry will make the only task


async def test_a_task_that_cannot_be_published_leaves_no_record(
    queue: TaskQueue, inspector: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise kombu.exceptions.OperationalError("Connection refused")

    monkeypatch.setattr(queue.celery, "send_task", broker_down)

    with pytest.raises(StoreUnavailable):
        await queue.send(TRAIN_MODEL, {})

    assert list(inspector.scan_iter(keys.TASK_RECORD_PREFIX + "*")) == []


@pytest.mark.parametrize(
    ("state", "payload", "error"),
    [
        ("RETRY", None, None),  # a retry Celery recorded without its reason
        ("RETRY", TimeoutError("snapshot late"), "TimeoutError: snapshot late"),
        ("FAILURE", ValueError("bad recipe"), "ValueError: bad recipe"),
    ],
)
async def test_a_task_state_names_its_error_only_when_there_is_one(
    queue: TaskQueue, state: str, payload: Exception | None, error: str | None
) -> None:
    task_id = await queue.send(TRAIN_MODEL, {})
    with warnings.catch_warnings():  # Celery's Redis backend calls redis-py's deprecated setex
        warnings.simplefilter("ignore", DeprecationWarning)
        queue.celery.backend.store_result(task_id, payload, state)

    read = await queue.state(task_id)

    assert (read.state, read.error) == (state, error)  # never "NoneType: None"
