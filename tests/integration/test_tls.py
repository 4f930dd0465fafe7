"""The whole system over TLS with a private certificate authority, on real processes.

A ``redis-server`` serves TLS with a certificate the test makes; every service, the Celery
worker and beat are given ``REDIS_URL``, ``CELERY_BROKER_URL`` and ``EPHEMERAL_REDIS_URL`` as
``rediss://…?ssl_ca_certs=<the CA>``: the services' client (valkey-glide), kombu (Celery's
broker), Celery's Redis result backend, RedBeat, the worker's probes and the container health
check all have to trust that CA. The server keeps a plain port for the test's own looking
inside, and the test checks that every other connection came in on the TLS port; a second
test shows each of those clients refusing a server that another CA vouches for.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redbeat.schedulers import get_redis

from recsys_shared.errors import RecsysError
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.redis import connect
from recsys_shared.testing import (
    Stack,
    admin_headers,
    build_stack,
    client_headers,
    load,
    retrain,
    start_all,
    taste_clusters,
)
from recsys_shared.testing.tls import make_certificates, tls_arguments
from retraining_worker.celery_app import celery_config
from retraining_worker.config import get_settings

pytestmark = pytest.mark.integration

SERVICES = ("feature-store", "recommender1", "gateway", "worker", "beat")
HEALTHCHECK = Path(__file__).parents[2] / "deploy" / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, str, int]]:
    """A redis-server serving TLS, the ``rediss://`` URL that trusts its CA, its TLS port."""
    folder = tmp_path_factory.mktemp("tls")
    certificates = make_certificates(folder / "certificates")
    port, arguments = tls_arguments(certificates)
    server = RedisServer(folder / "redis", extra_args=arguments).start()
    try:
        yield server, _url(port, certificates.ca), port
    finally:
        server.stop()


def _url(port: int, ca: Path) -> str:
    return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"


@pytest.fixture(scope="module")
def system(
    tls_redis: tuple[RedisServer, str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    server, url, _ = tls_redis
    stack = build_stack(
        server,
        tmp_path_factory.mktemp("stack"),
        REDIS_URL=url,
        CELERY_BROKER_URL=url,
        # Cached lists and records on another database of the same server, over TLS as well.
        EPHEMERAL_REDIS_URL=url.replace("/0?", "/1?"),
        # Beat's drift check every second: shows a scheduled task going round over TLS.
        DRIFT_CHECK_SECONDS="1",
    )
    stack.env["RECOMMENDER_URLS"] = stack.url("recommender1")  # the one replica started
    try:
        yield start_all(stack, SERVICES)
    finally:
        stack.close()


def test_events_in_a_retrain_and_recommendations_out_over_tls(
    system: Stack, tls_redis: tuple[RedisServer, str, int]
) -> None:
    server, _, tls_port = tls_redis
    items, events = taste_clusters(users_per_cluster=20)
    assert load(system.gateway, items, events) == len(events)
    version = retrain(system.gateway)["version"]
    with httpx.Client(base_url=system.gateway, timeout=30) as http:
        listed: dict[str, Any] = {}

        def personalised() -> bool:
            nonlocal listed
            listed = http.get("/v1/users/a1/recommendations", headers=client_headers()).json()
            return listed["strategy"] == "personalized"

        wait_until(personalised, timeout=20, what="a personalised list from the new model")
        assert listed["model_version"] == version
        assert all(item["item_id"].startswith("A") for item in listed["items"]), listed

        def drift_checked() -> bool:  # sent by beat (RedBeat), run by the worker
            overview = http.get("/v1/drift", headers=admin_headers()).json()
            return overview["latest"] is not None

        wait_until(drift_checked, timeout=30, what="a drift report from beat's schedule")

    worker = f"http://127.0.0.1:{system.ports['worker']}"
    ready = httpx.get(f"{worker}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "broker": "ok"}
    # The queue lengths are read from the broker at scrape time (absent if it was unreachable).
    assert "recsys_celery_queue_length{" in httpx.get(f"{worker}/metrics", timeout=10).text
    beat = subprocess.run(
        [sys.executable, str(HEALTHCHECK), "beat"], env=system.env, capture_output=True, timeout=60
    )
    assert beat.returncode == 0, beat.stderr.decode()

    _every_connection_came_over_tls(server, tls_port)


def _every_connection_came_over_tls(server: RedisServer, tls_port: int) -> None:
    """Each client of the server but this probe is connected to the TLS port (``laddr``)."""
    probe = redis.Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        own = probe.client_id()
        clients = [client for client in probe.client_list() if int(client["id"]) != own]
    finally:
        probe.close()
    assert clients, "no service is connected"
    plain = [client for client in clients if not client["laddr"].endswith(f":{tls_port}")]
    assert not plain, plain


def test_every_client_refuses_a_server_another_ca_signed(
    tls_redis: tuple[RedisServer, str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The positive test above would pass with clients that check no certificate at all."""
    _, _, tls_port = tls_redis
    url = _url(tls_port, make_certificates(tmp_path / "another").ca)
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    get_settings.cache_clear()
    celery = Celery("refusal", set_as_current=False)
    celery.conf.update(celery_config(), broker_connection_retry=False)  # the worker's and beat's
    get_settings.cache_clear()

    async def services_client() -> None:
        client = await connect(url, command_timeout=1.0)
        try:
            await client.ping()
        finally:
            await client.aclose()

    attempts: dict[str, Callable[[], object]] = {
        "services (valkey-glide)": lambda: asyncio.run(services_client()),
        "worker probes (redis-py)": lambda: redis.Redis.from_url(url, socket_timeout=2).ping(),
        "broker (kombu)": lambda: celery.connection_for_write().ensure_connection(max_retries=0),
        "results (Celery backend)": lambda: celery.backend.client.ping(),
        "beat (RedBeat)": lambda: get_redis(celery).ping(),
    }
    refusals: dict[str, str] = {}
    for name, attempt in attempts.items():
        try:
            attempt()
        except (RecsysError, redis.exceptions.ConnectionError, OperationalError) as error:
            refusals[name] = str(error)
    celery.close()
    connected = set(attempts) - set(refusals)
    assert not connected, f"connected despite an unknown CA: {connected}"
    # redis-py's SSL error names the failed verification; glide retries the handshake until its
    # timeout and says only that (the same port with the right CA answers, above).
    for name, message in refusals.items():
        assert "glide" in name or "CERTIFICATE_VERIFY_FAILED" in message, (name, message)
