"""The worker's health server: liveness, readiness against real Redis (the data tier and the
broker), Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from recsys_shared.processes import free_port
from recsys_shared.schemas import PROBLEM_MEDIA_TYPE
from retraining_worker.config import Settings
from retraining_worker.health import start_health_server

StartServer = Callable[..., str]


@pytest.fixture
def start_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StartServer]:
    """Start the health server against a Redis URL; returns its base URL. Shut down after."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    servers: list[ThreadingHTTPServer] = []

    def start(redis_url: str, broker_url: str | None = None) -> str:
        port = free_port()
        settings = Settings(
            redis_url=redis_url,
            celery_broker_url=broker_url,
            metrics_host="127.0.0.1",
            metrics_port=port,
        )
        server = start_health_server(settings)
        assert server is not None
        servers.append(server)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_health_endpoints(start_server: StartServer, redis_url: str) -> None:
    base = start_server(redis_url)

    with httpx.Client(base_url=base, timeout=5) as http:
        health = http.get("/healthz")
        ready = http.get("/readyz")
        scraped = http.get("/metrics")
        missing = http.get("/nope")

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/json"
    assert ready.json() == {"status": "ready", "checks": {"redis": "ok", "broker": "ok"}}
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert missing.json()["detail"] == "Nothing is served at /nope."


def test_head_a_query_and_other_methods(start_server: StartServer, redis_url: str) -> None:
    base = start_server(redis_url)

    with httpx.Client(base_url=base, timeout=5) as http:
        as_get = http.get("/healthz")
        head = http.head("/healthz")
        with_query = http.get("/readyz", params={"probe": "1"})
        posted = http.post("/healthz")

    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == as_get.headers["content-length"]
    assert with_query.status_code == 200
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"
    assert posted.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert posted.json()["title"] == "Method Not Allowed"


def test_not_ready_without_redis(start_server: StartServer) -> None:
    base = start_server(f"redis://127.0.0.1:{free_port()}/0")

    with httpx.Client(base_url=base, timeout=10) as http:
        ready = http.get("/readyz")
        health = http.get("/healthz")

    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"].startswith("unreachable")
    assert body["checks"]["broker"].startswith("unreachable")  # the same Redis by default
    # Liveness does not depend on Redis: the process is alive.
    assert health.status_code == 200


def test_not_ready_without_the_broker(start_server: StartServer, redis_url: str) -> None:
    base = start_server(redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0")

    with httpx.Client(base_url=base, timeout=10) as http:
        ready = http.get("/readyz")

    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["redis"] == "ok"
    assert checks["broker"].startswith("unreachable")


def test_concurrent_readiness_probes_all_answer(start_server: StartServer, redis_url: str) -> None:
    # Each probe runs the data tier's client on an event loop of its own thread: one probe
    # ending must not leave another without the loop that reads its replies.
    base = start_server(redis_url)

    with httpx.Client(base_url=base, timeout=10) as http, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: http.get("/readyz").status_code, range(24)))

    assert statuses == [200] * 24


def test_no_server_when_the_port_is_zero() -> None:
    assert start_health_server(Settings(metrics_port=0)) is None


def test_healthz_means_consuming_heartbeats_keep_it_alive() -> None:
    from retraining_worker.health import ConsumerHeartbeat

    heartbeat = ConsumerHeartbeat(stale_after=0.2)
    assert heartbeat.problem() is None  # just started: no heartbeat expected yet
    time.sleep(0.25)
    assert "no consumer heartbeat" in (heartbeat.problem() or "")
    heartbeat.beat(sender=object())
    assert heartbeat.problem() is None
    time.sleep(0.25)
    assert heartbeat.problem() is not None
