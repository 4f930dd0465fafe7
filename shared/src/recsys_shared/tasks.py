"""Celery task and queue names: the gateway sends tasks by name without importing worker code."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

TRAINING_QUEUE: Final = "training"
MONITORING_QUEUE: Final = "monitoring"

#: Take a feature-store snapshot, train, evaluate against the champion, publish through the gate.
TRAIN_MODEL: Final = "recsys.train_model"
#: Compare recent traffic with the active model's training data; may enqueue TRAIN_MODEL.
CHECK_DRIFT: Final = "recsys.check_drift"
#: Rewrite snapshots and model artifacts without the users erased since they were written.
ERASE_FROM_ARTIFACTS: Final = "recsys.erase_from_artifacts"
#: Prune model versions, artifacts and snapshots beyond what rollback needs (task records
#: expire on their own TTL).
PRUNE: Final = "recsys.prune"

TASK_QUEUES: Final[dict[str, str]] = {
    TRAIN_MODEL: TRAINING_QUEUE,
    CHECK_DRIFT: MONITORING_QUEUE,
    ERASE_FROM_ARTIFACTS: MONITORING_QUEUE,
    PRUNE: MONITORING_QUEUE,
}

#: How long a task's record (``keys.task_record``: the gateway answers ids it has one of),
#: its delivery count and its result stay on the broker.
TASK_RECORD_TTL_SECONDS: Final = 7 * 24 * 3600

#: Celery message header carrying the request id of the HTTP call that enqueued a task.
REQUEST_ID_HEADER: Final = "recsys_request_id"


def celery_url(broker_url: str) -> str:
    """The broker URL as kombu and Celery's Redis backend want it: over TLS they insist on
    ``ssl_cert_reqs`` in the URL (our settings may leave it out: certificates are always
    checked)."""
    parts = urlsplit(broker_url)
    if parts.scheme != "rediss" or "ssl_cert_reqs=" in parts.query:
        return broker_url
    query = "&".join(filter(None, (parts.query, "ssl_cert_reqs=required")))
    return urlunsplit(parts._replace(query=query))


def restore_interval_seconds(visibility_timeout_seconds: int) -> int:
    """How often a worker sweeps for the messages of dead workers: a tenth of the visibility
    timeout, between 1 and 10 seconds."""
    return max(1, min(10, visibility_timeout_seconds // 10))


def celery_client_config(broker_url: str, *, visibility_timeout_seconds: int) -> dict[str, object]:
    """Celery settings senders and the worker must agree on: broker, results, routes, format."""
    url = celery_url(broker_url)
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": TRAINING_QUEUE,
        "result_expires": TASK_RECORD_TTL_SECONDS,
        "result_extended": True,
        "task_track_started": True,
        "broker_connection_retry_on_startup": True,
        # A message is invisible to other workers this long after delivery; it must outlast the
        # longest task, or a task still running is delivered a second time.
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout_seconds,
            # How a message whose worker died comes back: each worker sweeps for messages past
            # their visibility timeout. kombu's defaults sweep once at start-up, then every
            # tenth 10 s tick, so a worker restarted at once left the message waiting up to
            # 100 s more; each tick sweeps now (one ZRANGE), every tenth of the timeout up to
            # 10 s, so it comes back at most that long after its timeout.
            "unacked_restore_throttle": 1,
            "unacked_restore_interval": restore_interval_seconds(visibility_timeout_seconds),
            # A sweep holds a mutex for milliseconds; one killed while holding it would stop
            # every worker's sweeps for kombu's default 300 s. Each message is given back in
            # a transaction of its own, so overlapping sweeps never give one back twice.
            "unacked_mutex_expire": restore_interval_seconds(visibility_timeout_seconds),
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
        "redis_socket_timeout": 10.0,
        "redis_socket_connect_timeout": 5.0,
        "redis_retry_on_timeout": True,
        "redis_backend_health_check_interval": 15,
    }
