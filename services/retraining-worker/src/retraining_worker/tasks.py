"""Celery tasks: each unpacks its message and calls a plain function."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Any

import redis
from celery import Celery, Task

from recsys_shared import keys
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.errors import Unavailable
from recsys_shared.logging import request_id_var
from recsys_shared.redis import connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Algorithm, TrainingOutcome, TrainingStatus
from recsys_shared.tasks import (
    CHECK_DRIFT,
    ERASE_FROM_ARTIFACTS,
    PRUNE,
    REQUEST_ID_HEADER,
    TASK_RECORD_TTL_SECONDS,
    TRAIN_MODEL,
)
from retraining_worker import metrics
from retraining_worker.celery_app import app
from retraining_worker.config import TRANSIENT_RETRY_SECONDS, Settings, get_settings
from retraining_worker.drift import run_drift_check
from retraining_worker.erasure import erase_from_artifacts
from retraining_worker.lock import TrainingLocked
from retraining_worker.pruning import prune
from retraining_worker.training import run_training

log = logging.getLogger(__name__)


def _broker(settings: Settings) -> redis.Redis:
    """The broker's Redis (a single node; Celery's own client library), for the records that
    belong with Celery's messages."""
    return redis.Redis.from_url(settings.broker_dsn, socket_timeout=5, decode_responses=True)


def enqueue_retrain(celery: Celery, settings: Settings, request_id: str) -> str:
    """Send a TRAIN_MODEL task (the drift monitor's retrain); its id. As the gateway enqueues
    (``gateway.task_queue``): the id is chosen first and its record written before the task
    is published, so no task runs without one (the gateway answers ``GET /v1/tasks/{id}``
    only for ids it has a record of), and a task that cannot be published takes it back."""
    task_id = str(uuid.uuid4())
    client = _broker(settings)
    try:
        client.set(keys.task_record(task_id), TRAIN_MODEL, ex=TASK_RECORD_TTL_SECONDS)
        try:
            headers = {REQUEST_ID_HEADER: request_id}
            celery.send_task(TRAIN_MODEL, kwargs={}, task_id=task_id, headers=headers)
        except BaseException:
            client.delete(keys.task_record(task_id))
            raise
    finally:
        client.close()
    return task_id


def _delivery_count(task_id: str) -> int:
    """Count this delivery of the message; a message redelivered too often is given up."""
    client = _broker(get_settings())
    try:
        count = int(client.incr(keys.task_deliveries(task_id)))
        client.expire(keys.task_deliveries(task_id), TASK_RECORD_TTL_SECONDS)
    finally:
        client.close()
    return count


def _redelivered_too_often(task: Task, name: str) -> str | None:
    """Why this delivery gives the task up, or None to run it.

    Messages are acknowledged late and given back when their worker dies, so a task that kills
    its worker (out of memory, a crash in native code) would come back forever. Each delivery
    is counted; a retry is a delivery of its own, so only the deliveries beyond the retries
    count against ``MAX_DELIVERIES``.
    """
    deliveries = _delivery_count(task.request.id)
    if deliveries <= get_settings().max_deliveries + task.request.retries:
        return None
    log.error("task %s delivered %d times; giving up", task.request.id, deliveries)
    metrics.TASKS.labels(name, "abandoned").inc()
    return f"delivered {deliveries} times without finishing"


def _abandoned(reason: str) -> dict[str, Any]:
    """The result of a task given up (a training's is its TrainingOutcome, same two keys)."""
    return {"status": "abandoned", "reasons": [reason]}


@app.task(name=TRAIN_MODEL, bind=True, max_retries=40)  # type: ignore[untyped-decorator]
def train_model(
    self: Task,
    algorithm: Algorithm | None = None,
    force: bool = False,
    shuffle_items: bool = False,
    search: bool | None = None,
) -> dict[str, Any]:
    request_id_var.set((self.request.headers or {}).get(REQUEST_ID_HEADER) or self.request.id)
    settings = get_settings()
    if (reason := _redelivered_too_often(self, TRAIN_MODEL)) is not None:
        metrics.TRAINING_RUNS.labels(TrainingStatus.ABANDONED).inc()
        return TrainingOutcome(status=TrainingStatus.ABANDONED, reasons=[reason]).model_dump()
    try:
        outcome = asyncio.run(
            run_training(
                settings,
                algorithm=algorithm,
                force=force,
                shuffle_items=shuffle_items,
                search=search,
                # A message delivered again keeps its id: the training finds its own version.
                task_id=self.request.id,
            )
        )
    except TrainingLocked as locked:
        metrics.TASKS.labels(TRAIN_MODEL, "retry").inc()
        raise self.retry(countdown=settings.locked_retry_seconds) from locked
    except (
        Unavailable,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ) as transient:
        # The feature-store or Redis did not answer (a restart, a deploy): try again shortly
        # rather than fail a training that will work in a few seconds.
        metrics.TASKS.labels(TRAIN_MODEL, "retry").inc()
        log.warning("training will be retried: %s", transient)
        raise self.retry(countdown=TRANSIENT_RETRY_SECONDS, max_retries=10) from transient
    metrics.TASKS.labels(TRAIN_MODEL, outcome.status).inc()
    return outcome.model_dump()


@app.task(name=CHECK_DRIFT, bind=True)  # type: ignore[untyped-decorator]
def check_drift(self: Task) -> dict[str, Any]:
    """Compare recent traffic with the active model's training data; may enqueue a retrain."""
    request_id = (self.request.headers or {}).get(REQUEST_ID_HEADER) or self.request.id
    request_id_var.set(request_id)
    if (reason := _redelivered_too_often(self, CHECK_DRIFT)) is not None:
        return _abandoned(reason)
    settings = get_settings()

    send = functools.partial(enqueue_retrain, app, settings, request_id)
    report = asyncio.run(run_drift_check(settings, send, now=time.time()))
    metrics.TASKS.labels(CHECK_DRIFT, report.status).inc()
    return report.model_dump(mode="json")


@app.task(name=ERASE_FROM_ARTIFACTS, bind=True)  # type: ignore[untyped-decorator]
def erase_users_from_artifacts(self: Task) -> dict[str, Any]:
    """Rewrite snapshots and model artifacts without the users erased since they were made."""
    if (reason := _redelivered_too_often(self, ERASE_FROM_ARTIFACTS)) is not None:
        return _abandoned(reason)
    settings = get_settings()

    async def run() -> dict[str, Any]:
        client = await connect(settings.redis_dsn, command_timeout=settings.redis_timeout_seconds)
        try:
            done = await erase_from_artifacts(
                client, ArtifactStore(settings.artifact_url), settings.partitions
            )
        finally:
            await client.aclose()
        return {"snapshots": done.snapshots, "models": done.models}

    result = asyncio.run(run())
    metrics.TASKS.labels(ERASE_FROM_ARTIFACTS, "success").inc()
    return result


@app.task(name=PRUNE, bind=True)  # type: ignore[untyped-decorator]
def prune_registry_and_artifacts(self: Task) -> dict[str, Any]:
    """Old model versions, artifacts and snapshots beyond what rollback needs."""
    if (reason := _redelivered_too_often(self, PRUNE)) is not None:
        return _abandoned(reason)
    settings = get_settings()

    async def run() -> None:
        client = await connect(settings.redis_dsn, command_timeout=settings.redis_timeout_seconds)
        try:
            await prune(ModelRegistry(client), ArtifactStore(settings.artifact_url), settings)
        finally:
            await client.aclose()

    asyncio.run(run())
    metrics.TASKS.labels(PRUNE, "success").inc()
    return {"status": "pruned"}
