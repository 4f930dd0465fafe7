"""The Celery app of the worker and beat. Configuration is read lazily from the settings."""

from __future__ import annotations

from typing import Any

from celery import Celery

from recsys_shared import keys
from recsys_shared.tasks import (
    CHECK_DRIFT,
    ERASE_FROM_ARTIFACTS,
    PRUNE,
    TRAIN_MODEL,
    celery_client_config,
    celery_url,
)
from retraining_worker.config import get_settings

#: The longest beat sleeps between looks at its schedule; RedBeat renews its lock on each, and a
#: beat waiting for the lock tries it this often.
BEAT_LOOP_SECONDS = 5


def celery_config() -> dict[str, Any]:
    settings = get_settings()
    return {
        **celery_client_config(
            settings.broker_dsn,
            visibility_timeout_seconds=settings.broker_visibility_timeout_seconds,
        ),
        # Reliability: acknowledge after the task ran, give the message back if the process
        # running it dies, and take one message at a time so none waits behind a long training.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit_seconds,
        # SIGTERM is a cold shutdown (__main__ remaps it): running tasks get this long, then
        # are cancelled, and the closing channel gives their messages back to the queue at
        # once. A warm shutdown would wait for a training the pod's grace period may not
        # cover, and a worker killed then leaves the message to the visibility timeout.
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_seconds,
        "task_soft_time_limit": max(settings.task_time_limit_seconds - 30, 5),
        "worker_max_tasks_per_child": 20,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # Beat through RedBeat: the schedule lives in Redis behind a lock, so a second beat
        # process waits instead of firing every task twice.
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": celery_url(settings.broker_dsn),
        # Beat's own client options, the broker's timeouts: set here, RedBeat stops borrowing
        # broker_transport_options (a deprecated fallback it warns about on every start).
        "redbeat_redis_options": {
            "socket_timeout": 10.0,
            "socket_connect_timeout": 5.0,
            "retry_on_timeout": True,
        },
        "redbeat_key_prefix": keys.REDBEAT_PREFIX,
        "redbeat_lock_timeout": settings.beat_lock_timeout_seconds,
        "beat_max_loop_interval": BEAT_LOOP_SECONDS,
        "beat_schedule": {
            # Frequent: refit the last winning recipe on the new data.
            "scheduled-retrain": {
                "task": TRAIN_MODEL,
                "schedule": settings.scheduled_retrain_seconds,
                "kwargs": {},
            },
            # Slow: search recipes again, in case the data now favours another.
            "scheduled-search": {
                "task": TRAIN_MODEL,
                "schedule": settings.scheduled_search_seconds,
                "kwargs": {"search": True},
            },
            "drift-check": {
                "task": CHECK_DRIFT,
                "schedule": settings.drift_check_seconds,
                "kwargs": {},
            },
            "erase-from-artifacts": {
                "task": ERASE_FROM_ARTIFACTS,
                "schedule": settings.erasure_rewrite_seconds,
                "kwargs": {},
            },
            "prune": {
                "task": PRUNE,
                "schedule": settings.prune_seconds,
                "kwargs": {},
            },
        },
    }


app = Celery("retraining_worker", include=["retraining_worker.tasks"])
app.add_defaults(celery_config)
