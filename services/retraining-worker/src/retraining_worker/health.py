"""``/healthz``, ``/readyz`` and ``/metrics`` for the Celery worker, from a daemon thread.

``/healthz`` means "consuming", not just "running": it fails once the worker's consumer has sent
no heartbeat for a minute. The heart beats from the consumer's event loop every couple of
seconds, also while a task trains in the pool, so a worker stuck after losing its broker (a
known failure of Celery on Redis) is reported and restarted instead of trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery.signals import heartbeat_sent
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from recsys_shared.errors import RecsysError
from recsys_shared.redis import connect
from recsys_shared.schemas import PROBLEM_MEDIA_TYPE, Problem
from recsys_shared.tasks import MONITORING_QUEUE, TRAINING_QUEUE

# Imported by the process that serves /metrics, before it serves: the families (their labels
# at 0) are on disk from the first scrape, not only once Celery has imported the tasks.
from retraining_worker import metrics  # noqa: F401
from retraining_worker.config import Settings
from retraining_worker.metric_files import fold_exited

log = logging.getLogger(__name__)

CONSUMER_STALE_SECONDS = 60.0


class ConsumerHeartbeat:
    """When the worker's consumer last proved it was alive (Celery's heartbeat_sent signal)."""

    def __init__(self, stale_after: float = CONSUMER_STALE_SECONDS) -> None:
        self.stale_after = stale_after
        self.started = time.monotonic()
        self.last: float | None = None

    def beat(self, **_: Any) -> None:
        self.last = time.monotonic()

    def problem(self) -> str | None:
        silent = time.monotonic() - (self.last if self.last is not None else self.started)
        if silent < self.stale_after:
            return None
        return f"no consumer heartbeat for {silent:.0f}s"


class QueueLengthCollector:
    """Tasks waiting in each Celery queue, read from the broker at scrape time: a queue that
    only grows means the workers cannot keep up, or have stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "recsys_celery_queue_length", "Tasks waiting in a Celery queue.", labels=["queue"]
        )
        client = redis.Redis.from_url(self.settings.broker_dsn, socket_timeout=1.0)
        try:
            for queue in (TRAINING_QUEUE, MONITORING_QUEUE):
                family.add_metric([queue], float(client.llen(queue)))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return  # Redis down: no sample, rather than a misleading zero
        finally:
            client.close()
        yield family


#: One scrape at a time: folding the exited processes' files must not run beside a collection.
_SCRAPE = threading.Lock()
#: One probe's event loop at a time: glide reads every client's replies on the loop that made
#: the first one, so a probe whose loop closes would leave a concurrent one unanswered forever.
_DATA_TIER_PROBE = threading.Lock()


def _readiness(settings: Settings) -> dict[str, str]:
    """The data tier (through the services' client) and the broker (through Celery's) answer."""
    with _DATA_TIER_PROBE:
        checks = {"redis": asyncio.run(_data_tier(settings))}
    broker = redis.Redis.from_url(settings.broker_dsn, socket_timeout=1.0)
    try:
        broker.ping()
        checks["broker"] = "ok"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        checks["broker"] = f"unreachable: {type(error).__name__}"
    finally:
        broker.close()
    return checks


async def _data_tier(settings: Settings) -> str:
    client = await connect(settings.redis_dsn, command_timeout=1.0, name="worker-health")
    try:
        await client.ping()
    except RecsysError as error:
        return f"unreachable: {error.detail}"
    finally:
        await client.aclose()
    return "ok"


class HealthHandler(BaseHTTPRequestHandler):
    """``/healthz``, ``/readyz`` and ``/metrics`` (GET, or HEAD); problem details otherwise."""

    def __init__(
        self, *args: Any, settings: Settings, heartbeat: ConsumerHeartbeat, **kwargs: Any
    ) -> None:
        self.settings = settings
        self.heartbeat = heartbeat
        super().__init__(*args, **kwargs)  # handles the request

    def _metrics(self) -> bytes:
        """Every process's metrics, the exited ones' folded first (``metric_files``)."""
        with _SCRAPE:
            fold_exited(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(QueueLengthCollector(self.settings))
            return generate_latest(registry)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, self._metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            problem = self.heartbeat.problem()
            if problem is None:
                self._json(200, {"status": "ok"})
            else:
                self._json(503, {"status": "stuck", "detail": problem})
        elif path == "/readyz":
            checks = _readiness(self.settings)
            ready = all(value == "ok" for value in checks.values())
            self._json(
                200 if ready else 503,
                {"status": "ready" if ready else "not_ready", "checks": checks},
            )
        else:
            self._problem(404, f"Nothing is served at {path[:200]}.")

    def do_HEAD(self) -> None:
        self.do_GET()  # _send leaves a HEAD's body out

    def _refuse_method(self) -> None:
        detail = f"{self.command} is not served here; every path serves GET and HEAD."
        self._problem(405, detail, headers={"Allow": "GET, HEAD"})

    # The names BaseHTTPRequestHandler dispatches to (it answers 501 to a method it lacks).
    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _refuse_method  # noqa: N815

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _problem(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        problem = Problem.about_blank(status, detail).model_dump_json().encode()
        self._send(status, problem, PROBLEM_MEDIA_TYPE, headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def start_health_server(settings: Settings) -> ThreadingHTTPServer | None:
    if not settings.metrics_port:
        return None
    # Connected before the worker builds its heart, which only signals to existing receivers.
    heartbeat = ConsumerHeartbeat()
    heartbeat_sent.connect(heartbeat.beat, weak=False)
    handler = partial(HealthHandler, settings=settings, heartbeat=heartbeat)
    server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), handler)
    threading.Thread(target=server.serve_forever, name="health-server", daemon=True).start()
    log.info("worker health and metrics on port %d", settings.metrics_port)
    return server
