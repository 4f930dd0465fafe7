"""The services as real processes on free loopback ports, on a :class:`DataTier`: what the
cross-service tests start (and kill, and restart), and the benchmarks measure."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from recsys_shared.processes import (
    ManagedProcess,
    RedisServer,
    free_port,
    uvicorn_argv,
)
from recsys_shared.testing.api import API_KEYS
from recsys_shared.testing.tiers import DataTier, single_tier

SERVICES = ("feature-store", "recommender1", "recommender2", "gateway", "worker")
_APPS = {
    "feature-store": "feature_store.main:create_app",
    "gateway": "gateway.main:create_app",
    "recommender": "recommender.main:create_app",
}


@dataclass
class Stack:
    """The services of one system, sharing one :class:`DataTier`."""

    tier: DataTier
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def redis(self) -> RedisServer:
        """The single redis-server of a one-node tier (tests that restart Redis)."""
        assert self.tier.server is not None, "this stack runs on a cluster"
        return self.tier.server

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def gateway(self) -> str:
        return self.url("gateway")

    def start(
        self, name: str, *, wait: bool = True, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """Start (or restart) one service by name: gateway, recommender1, recommender2,
        feature-store, worker or beat; a name that starts with "gateway" is another gateway,
        with "worker" another worker, with "beat" another beat. ``env`` adds to or overrides
        the stack's environment for this process."""
        port = self.ports.setdefault(name, free_port())
        # The stream consumer's name: the service's, unless a test chose one in ``env``.
        extra = {"CONSUMER_NAME": self.env.get("CONSUMER_NAME", name), **(env or {})}
        health_url: str | None = f"{self.url(name)}/healthz"
        if name.startswith("worker"):
            argv = [sys.executable, "-m", "retraining_worker", "worker"]
            extra["METRICS_PORT"] = str(port)
            # Only the worker: it collects metrics across its pool's processes.
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / f"{name}-metrics")
        elif name.startswith("beat"):
            argv = [sys.executable, "-m", "retraining_worker", "beat"]
            health_url = None
        else:
            kind = next(app for app in _APPS if name.startswith(app))
            argv = uvicorn_argv(_APPS[kind], port)
        with (self.workdir / f"{name}.log").open("ab") as output:
            process = ManagedProcess(
                name, argv, env={**self.env, **extra}, health_url=health_url, output=output
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


def build_stack(tier: DataTier | RedisServer, workdir: Path, **overrides: str) -> Stack:
    """Configure (not start) a stack; ports are chosen so every service can find the others."""
    tier = single_tier(tier) if isinstance(tier, RedisServer) else tier
    stack = Stack(tier=tier, workdir=workdir)
    for name in ("gateway", "recommender1", "recommender2", "feature-store", "worker"):
        stack.ports[name] = free_port()
    stack.env = {
        **os.environ,
        "ENVIRONMENT": "test",
        **tier.env(),
        "ARTIFACT_URL": f"file://{workdir / 'artifacts'}",
        "API_KEYS": API_KEYS,
        "FEATURE_STORE_URL": stack.url("feature-store"),
        "RECOMMENDER_URLS": f"{stack.url('recommender1')},{stack.url('recommender2')}",
        "MODEL_POLL_SECONDS": "0.5",
        "POPULARITY_MERGE_SECONDS": "0.2",
        # A first training searches recipes: a few trials, not the demo's two minutes.
        "TRAINING_BUDGET_SECONDS": "20",
        "SEARCH_MAX_TRIALS": "6",
        "LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }
    return stack


def start_all(stack: Stack, services: Sequence[str] = SERVICES, *, timeout: float = 90) -> Stack:
    """Start the services together, then wait until each is healthy."""
    for name in services:
        stack.start(name, wait=False)
    for name in services:
        stack.processes[name].wait_healthy(timeout=timeout)
    return stack


@contextmanager
def own_stack(workdir: Path, services: Sequence[str] = (), **overrides: str) -> Iterator[Stack]:
    """A stack with a redis-server of its own (for tests that kill or restart Redis), the
    given services started together; everything stopped at the end."""
    server = RedisServer(workdir / "redis")
    stack: Stack | None = None
    try:
        stack = build_stack(server.start(), workdir, **overrides)
        yield start_all(stack, services)
    finally:
        if stack is not None:
            stack.close()
        server.stop()


def interrupt_on_sigterm() -> None:
    """A ``kill`` (SIGTERM) ends a script as Ctrl-C does: the ``KeyboardInterrupt`` unwinds the
    ``with`` blocks and ``finally`` clauses that stop what it started, which runs in sessions
    of its own and would otherwise outlive it."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
