"""Pytest fixtures shared by every test suite (registered by the root ``conftest.py``).

Tests that touch Redis get a real ``redis-server`` started for the session on a free port, and a
clean database per test. Cross-service tests start the services themselves as real processes
(:class:`Stack`), so they can also kill and restart them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from recsys_shared.multiplexed import MultiplexedRedis
from recsys_shared.processes import ManagedProcess, RedisServer, free_port, uvicorn_argv, wait_until
from recsys_shared.redis import create_async_redis, create_multiplexed_redis

CLIENT_KEY = "test-client-key"
ADMIN_KEY = "test-admin-key"
API_KEYS = f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_async_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def multiplexed_client(redis_url: str) -> AsyncIterator[MultiplexedRedis]:
    """The read path's client on the same clean database as ``redis_client``."""
    client = create_multiplexed_redis(redis_url)
    yield client
    await client.aclose()


@dataclass
class Stack:
    """The services as real processes on free loopback ports, sharing one redis-server."""

    redis: RedisServer
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def gateway(self) -> str:
        return self.url("gateway")

    def start(
        self, name: str, *, wait: bool = True, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """Start (or restart) one service by name: gateway, recommender1, recommender2,
        feature-store or worker; a name that starts with "gateway" is another gateway.
        ``env`` adds to or overrides the stack's environment for this process."""
        port = self.ports.setdefault(name, free_port())
        # The stream consumer's name: the service's, unless a test chose one in ``env``.
        extra = {"CONSUMER_NAME": self.env.get("CONSUMER_NAME", name), **(env or {})}
        if name == "worker":
            argv = [sys.executable, "-m", "retraining_worker", "worker"]
            extra["METRICS_PORT"] = str(port)
            # Only the worker: it collects metrics across its pool's processes.
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "worker-metrics")
        else:
            app = (
                "gateway.main:create_app"
                if name.startswith("gateway")
                else {"feature-store": "feature_store.main:create_app"}.get(
                    name, "recommender.main:create_app"
                )
            )
            argv = uvicorn_argv(app, port)
        with (self.workdir / f"{name}.log").open("ab") as output:
            process = ManagedProcess(
                name,
                argv,
                env={**self.env, **extra},
                health_url=f"{self.url(name)}/healthz",
                output=output,
            ).start()
        self.processes[name] = process
        if wait:
            process.wait_healthy(timeout=60)
        return process

    def stop(self, name: str) -> None:
        self.processes[name].stop()

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop(timeout=10)


def build_stack(redis_server: RedisServer, workdir: Path, **overrides: str) -> Stack:
    """Configure (not start) a stack; ports are chosen so every service can find the others."""
    stack = Stack(redis=redis_server, workdir=workdir)
    for name in ("gateway", "recommender1", "recommender2", "feature-store", "worker"):
        stack.ports[name] = free_port()
    stack.env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "REDIS_URL": redis_server.url,
        "ARTIFACT_URL": f"file://{workdir / 'artifacts'}",
        "API_KEYS": API_KEYS,
        "FEATURE_STORE_URL": stack.url("feature-store"),
        "RECOMMENDER_URLS": f"{stack.url('recommender1')},{stack.url('recommender2')}",
        "MODEL_POLL_SECONDS": "0.5",
        # A first training searches recipes: a few trials, not the demo's two minutes.
        "TRAINING_BUDGET_SECONDS": "20",
        "SEARCH_MAX_TRIALS": "6",
        "LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }
    return stack


@contextmanager
def own_stack(workdir: Path, services: Sequence[str] = (), **overrides: str) -> Iterator[Stack]:
    """A stack with a redis-server of its own (for tests that kill or restart Redis), the
    given services started together; everything stopped at the end."""
    server = RedisServer(workdir / "redis").start()
    stack = build_stack(server, workdir, **overrides)
    try:
        for name in services:
            stack.start(name, wait=False)
        for name in services:
            stack.processes[name].wait_healthy(timeout=90)
        yield stack
    finally:
        stack.close()
        server.stop()


def client_headers() -> dict[str, str]:
    return {"X-API-Key": CLIENT_KEY}


def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def wait_for_applied(gateway: str, *, timeout: float = 30.0) -> None:
    """Until the feature-store has applied everything the gateway accepted."""

    def caught_up() -> bool:
        body = httpx.get(f"{gateway}/v1/pipeline", headers=admin_headers(), timeout=5).json()
        return bool(body["consumer_lag"] == 0 and body["pending"] == 0)

    wait_until(caught_up, timeout=timeout, interval=0.1, what="events to be applied")


def wait_for_task(gateway: str, task_id: str, *, timeout: float = 120.0) -> dict[str, object]:
    result: dict[str, object] = {}

    def finished() -> bool:
        nonlocal result
        result = httpx.get(
            f"{gateway}/v1/tasks/{task_id}", headers=admin_headers(), timeout=5
        ).json()
        return result.get("state") in {"SUCCESS", "FAILURE"}

    wait_until(finished, timeout=timeout, interval=0.2, what=f"task {task_id}")
    return result


_CLUSTER_NAMES = (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon",
)  # fmt: skip


def taste_clusters(
    *,
    clusters: int = 2,
    users_per_cluster: int = 40,
    items_per_cluster: int = 30,
    events_per_user: int = 12,
    seed: int = 7,
    days: float = 30.0,
    now: float | None = None,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Taste clusters: users ``a*`` interact only with items ``A*`` (category "alpha"), users
    ``b*`` only with ``B*`` ("beta"), and so on for up to 20 clusters. Returns (items, events),
    events spread over
    ``days`` up to ``now`` so a time-ordered holdout has recent interactions to judge."""
    import random
    from datetime import UTC, datetime

    generator = random.Random(seed)
    end = now if now is not None else time.time() - 60
    items: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    for index, category in enumerate(_CLUSTER_NAMES[:clusters]):
        cluster = chr(ord("a") + index)
        catalogue = [f"{cluster.upper()}{index}" for index in range(items_per_cluster)]
        items += [
            {"item_id": item, "title": f"{category.title()} item {item}", "categories": [category]}
            for item in catalogue
        ]
        # A skewed choice, so some items are popular within the cluster, as in real data.
        weights = [1.0 / (rank + 1) ** 0.7 for rank in range(items_per_cluster)]
        for user_index in range(users_per_cluster):
            user = f"{cluster}{user_index}"
            chosen: set[str] = set()
            while len(chosen) < events_per_user:
                chosen.add(generator.choices(catalogue, weights)[0])
            for item in sorted(chosen):
                moment = end - generator.random() * days * 86_400
                events.append(
                    {
                        "event_id": f"{user}-{item}",
                        "user_id": user,
                        "item_id": item,
                        "type": "like",
                        "timestamp": datetime.fromtimestamp(moment, UTC).isoformat(),
                    }
                )
    return items, events
