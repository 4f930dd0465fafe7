"""Celery tasks: each unpacks its message and calls a plain function."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from celery import Task

from recsys_shared import keys
from recsys_shared.errors import Unavailable
from recsys_shared.logging import request_id_var
from recsys_shared.redis import REDIS_UNAVAILABLE_ERRORS, create_redis
from recsys_shared.schemas import Algorithm, TrainingOutcome
from recsys_shared.tasks import CHECK_DRIFT, REQUEST_ID_HEADER, TRAIN_MODEL
from retraining_worker import metrics
from retraining_worker.celery_app import app
from retraining_worker.config import get_settings
from retraining_worker.drift import run_drift_check
from retraining_worker.training import TrainingLocked, run_training

log = logging.getLogger(__name__)

_LOCKED_RETRY_SECONDS = 15
_TRANSIENT_RETRY_SECONDS = 3


def _delivery_count(task_id: str) -> int:
    """Count this delivery of the message; a message redelivered too often is given up."""
    settings = get_settings()
    client = create_redis(settings.redis_dsn)
    try:
        count = int(client.incr(keys.task_deliveries(task_id)))
        client.expire(keys.task_deliveries(task_id), 7 * 24 * 3600)
    finally:
        client.close()
    return count


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
    deliveries = _delivery_count(self.request.id)
    if deliveries > settings.max_deliveries + self.request.retries:
        log.error("task %s delivered %d times; giving up", self.request.id, deliveries)
        metrics.TASKS.labels(TRAIN_MODEL, "abandoned").inc()
        return TrainingOutcome(
            status="abandoned", reasons=[f"delivered {deliveries} times without finishing"]
        ).model_dump()
    try:
        outcome = asyncio.run(
            run_training(
                settings,
                algorithm=algorithm,
                force=force,
                shuffle_items=shuffle_items,
                search=search,
            )
        )
    except TrainingLocked as locked:
        metrics.TASKS.labels(TRAIN_MODEL, "retry").inc()
        raise self.retry(countdown=_LOCKED_RETRY_SECONDS) from locked
    except (Unavailable, *REDIS_UNAVAILABLE_ERRORS) as transient:  # type: ignore[misc]
        # The feature-store or Redis did not answer (a restart, a deploy): try again shortly
        # rather than fail a training that will work in a few seconds.
        metrics.TASKS.labels(TRAIN_MODEL, "retry").inc()
        log.warning("training will be retried: %s", transient)
        raise self.retry(countdown=_TRANSIENT_RETRY_SECONDS, max_retries=10) from transient
    metrics.TASKS.labels(TRAIN_MODEL, outcome.status).inc()
    return outcome.model_dump()


#: How long the id of a drift-triggered retrain stays followable through GET /v1/tasks/{id}.
_TASK_RECORD_TTL_SECONDS = 7 * 24 * 3600


@app.task(name=CHECK_DRIFT, bind=True)  # type: ignore[untyped-decorator]
def check_drift(self: Task) -> dict[str, Any]:
    """Compare recent traffic with the active model's training data; may enqueue a retrain."""
    request_id = (self.request.headers or {}).get(REQUEST_ID_HEADER) or self.request.id
    request_id_var.set(request_id)
    settings = get_settings()

    def send() -> str:
        task_id = str(
            app.send_task(TRAIN_MODEL, kwargs={}, headers={REQUEST_ID_HEADER: request_id}).id
        )
        client = create_redis(settings.redis_dsn)
        try:  # the gateway answers GET /v1/tasks/{id} only for ids it has a record of
            client.set(keys.task_record(task_id), TRAIN_MODEL, ex=_TASK_RECORD_TTL_SECONDS)
        finally:
            client.close()
        return task_id

    report = asyncio.run(run_drift_check(settings, send, now=time.time()))
    metrics.TASKS.labels(CHECK_DRIFT, report.status).inc()
    return report.model_dump(mode="json")
