"""The drift monitor's retrain is enqueued as the gateway enqueues, on a real Redis broker:
its record is written before the task is published, and a task that cannot be published
takes its record back, so no task runs without one and no record names a task that is not."""

from __future__ import annotations

import json

import kombu.exceptions
import pytest
import redis
from celery import Celery
from pydantic import SecretStr

from recsys_shared import keys
from recsys_shared.tasks import TRAIN_MODEL, TRAINING_QUEUE, celery_client_config
from retraining_worker.config import Settings
from retraining_worker.tasks import enqueue_retrain


@pytest.fixture
def broker_settings(settings: Settings, redis_url: str) -> Settings:
    return settings.model_copy(
        update={"redis_url": redis_url, "celery_broker_url": SecretStr(redis_url)}
    )


@pytest.fixture
def celery(redis_url: str) -> Celery:
    app = Celery("test-enqueue", set_as_current=False)
    app.conf.update(celery_client_config(redis_url, visibility_timeout_seconds=3600))
    return app


def test_the_record_is_there_before_the_task_is_published(
    celery: Celery,
    broker_settings: Settings,
    inspector: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded_at_publish: list[str | None] = []
    publish = celery.send_task

    def checking_publish(name: str, **options: object) -> object:
        recorded_at_publish.append(inspector.get(keys.task_record(str(options["task_id"]))))
        return publish(name, **options)

    monkeypatch.setattr(celery, "send_task", checking_publish)

    task_id = enqueue_retrain(celery, broker_settings, "req-1")

    assert recorded_at_publish == [TRAIN_MODEL]
    [message] = inspector.lrange(TRAINING_QUEUE, 0, -1)
    headers = json.loads(message)["headers"]
    assert (headers["id"], headers["task"]) == (task_id, TRAIN_MODEL)
    assert headers["recsys_request_id"] == "req-1"


def test_a_task_that_cannot_be_published_takes_its_record_back(
    celery: Celery,
    broker_settings: Settings,
    inspector: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broker_down(name: str, **options: object) -> object:
        raise kombu.exceptions.OperationalError("broker gone")

    monkeypatch.setattr(celery, "send_task", broker_down)

    with pytest.raises(kombu.exceptions.OperationalError):
        enqueue_retrain(celery, broker_settings, "req-2")

    assert inspector.keys(keys.task_record("*")) == []
    assert inspector.llen(TRAINING_QUEUE) == 0
