"""Enqueueing Celery tasks by name and reading their state, without importing worker code.

Everything here lives on the broker's Redis (``CELERY_BROKER_URL``): Celery's messages and
results through kombu, and the records of the task ids enqueued through this API (and by the
drift monitor, which writes them as this module does: record first, then the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import kombu.exceptions
import redis
from celery import Celery
from celery.result import AsyncResult

from recsys_shared import keys
from recsys_shared.errors import RecsysError, StoreUnavailable, UnknownTask
from recsys_shared.logging import request_id_var
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import TaskState
from recsys_shared.tasks import REQUEST_ID_HEADER, celery_client_config

_BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class TaskQueue:
    def __init__(
        self,
        broker: RedisClient,
        broker_url: str,
        *,
        visibility_timeout_seconds: int,
        record_ttl_seconds: int,
    ) -> None:
        self.redis = broker
        self.record_ttl_seconds = record_ttl_seconds
        self.celery = Celery("gateway", set_as_current=False)
        self.celery.conf.update(
            celery_client_config(broker_url, visibility_timeout_seconds=visibility_timeout_seconds),
            # Fail fast when the broker is down: the client gets a 503 it can retry.
            task_publish_retry_policy={
                "max_retries": 2,
                "interval_start": 0.1,
                "interval_step": 0.2,
            },
        )

    async def send(self, name: str, kwargs: dict[str, Any]) -> str:
        """Enqueue task ``name``; its id. The record goes first: a record that cannot be
        written leaves nothing enqueued, so the client's retry (after the 503) makes the only
        task, and a task that cannot be published takes its record back."""
        task_id = str(uuid.uuid4())  # as Celery would make it
        record = keys.task_record(task_id)
        await self.redis.execute("SET", record, name, "EX", self.record_ttl_seconds)
        headers = {REQUEST_ID_HEADER: request_id_var.get() or ""}
        try:
            await asyncio.to_thread(
                self.celery.send_task, name, kwargs=kwargs, headers=headers, task_id=task_id
            )
        except _BROKER_ERRORS as error:
            with contextlib.suppress(RecsysError):  # else it expires with its TTL
                await self.redis.execute("DEL", record)
            raise StoreUnavailable("The task queue is unavailable; retry shortly.") from error
        return task_id

    async def state(self, task_id: str) -> TaskState:
        if not await self.redis.execute("EXISTS", keys.task_record(task_id)):
            raise UnknownTask(f"No task '{task_id}' was enqueued through this API.")
        try:
            return await asyncio.to_thread(self._read_state, task_id)
        except _BROKER_ERRORS as error:
            raise StoreUnavailable("The task result store is unavailable.") from error

    def _read_state(self, task_id: str) -> TaskState:
        result = AsyncResult(task_id, app=self.celery)
        state = str(result.state)
        payload = result.result
        if state == "SUCCESS" and isinstance(payload, dict):
            return TaskState(task_id=task_id, state=state, result=payload)
        if state in {"FAILURE", "RETRY"} and payload is not None:
            return TaskState(
                task_id=task_id, state=state, error=f"{type(payload).__name__}: {payload}"
            )
        return TaskState(task_id=task_id, state=state)

    def close(self) -> None:
        self.celery.close()
