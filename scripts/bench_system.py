"""The system under test of `make bench`, and the bare endpoint it is measured against.

Starts its own redis-servers (as `make run`: a durable one, and one without persistence for
cache entries and list records) and the whole system (gateway, two recommenders, feature-store,
Celery worker, and a second gateway that uses one recommender only) on free loopback ports,
beside the baseline (scripts/bench_baseline.py) on the same Redis. Also what the measured
sections do to it between runs: warm or empty the cache, read its hit counters.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from bench_baseline import BASELINE_KEY
from bench_workload import API_KEY_HEADER, Workload
from bench_wrk import wrk

from recsys_shared import keys
from recsys_shared.processes import ManagedProcess, RedisServer, free_port, uvicorn_argv
from recsys_shared.testing import Stack, build_stack

ROOT = Path(__file__).resolve().parent.parent
#: A second gateway that sends to one recommender replica only: two replicas on two cores
#: shared with everything else add no CPU, only contention, so the uncached figures are taken
#: through it (and, for comparison, through the gateway of `make run`, which uses both).
ONE_REPLICA_GATEWAY = "gateway-one-replica"
SERVICES = ("feature-store", "recommender1", "recommender2", "gateway", "worker")
#: The test stack's settings that `make run` leaves at the services' defaults (the tests shorten
#: them): a benchmark of the system "as `make run` starts it" drops them.
RUN_DEFAULTS = (
    "TRAINING_BUDGET_SECONDS",
    "SEARCH_MAX_TRIALS",
    "MODEL_POLL_SECONDS",
    "POPULARITY_MERGE_SECONDS",
)


@dataclass
class System:
    """A running system, its Redis servers and the baseline endpoint beside it."""

    stack: Stack
    server: RedisServer
    ephemeral: RedisServer
    baseline_port: int

    @property
    def baseline_url(self) -> str:
        return f"http://127.0.0.1:{self.baseline_port}/baseline"

    @property
    def one_replica(self) -> str:
        return self.stack.url(ONE_REPLICA_GATEWAY)

    def serve_as_baseline(self, body: bytes) -> None:
        """What the baseline's one GET returns: a list the gateway served, so both send the
        same bytes."""
        redis.Redis.from_url(self.server.url).set(BASELINE_KEY, body)

    def warm(self, workload: Workload) -> None:
        """Cache the hot paths (the cached run's keys), after a previous run dropped them."""
        key = {API_KEY_HEADER: workload.api_keys[0]}
        with httpx.Client(base_url=self.stack.gateway, headers=key, timeout=10) as http:
            for path in workload.hot:
                http.get(path).raise_for_status()

    def forget_cached_lists(self) -> None:
        """Drop every cached list (on the ephemeral Redis, as in `make run`), so an uncached
        run does not meet the previous run's entries (it repeats a few per cent of its own
        keys: see bench_workload.MAX_PAGE_OFFSET)."""
        client = redis.Redis.from_url(self.ephemeral.url)
        cached = list(client.scan_iter(f"{keys.CACHE_PREFIX}*", count=1000))
        for start in range(0, len(cached), 1000):
            client.unlink(*cached[start : start + 1000])
        client.close()


def cache_counts(gateway: str) -> dict[str, float]:
    text = httpx.get(f"{gateway}/metrics", timeout=5).text
    return {
        result: float(value)
        for result, value in re.findall(
            r'recsys_cache_requests_total\{result="(\w+)"\} ([\d.e+]+)', text
        )
    }


def through(gateway: str, lua: str) -> dict[str, float]:
    """A wrk run against a gateway, with the cache's hit ratio over it (its own counters)."""
    before = cache_counts(gateway)
    figures = wrk(gateway, lua=lua)
    after = cache_counts(gateway)
    lookups = sum(after.values()) - sum(before.values())
    figures["hit_ratio"] = round((after.get("hit", 0) - before.get("hit", 0)) / max(lookups, 1), 4)
    return figures


@contextmanager
def running_system(
    workdir: Path, *, service_defaults: Sequence[str] = (), **overrides: str
) -> Iterator[System]:
    """Every service and the baseline started (``overrides`` for the stack's environment, and
    the settings named in ``service_defaults`` left at the services' own defaults instead of
    the test stack's); everything stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir / "redis").start()
    # Cache entries and list records on a Redis without persistence, as `make run` has it.
    ephemeral = RedisServer(workdir / "redis-ephemeral", durable=False).start()
    stack = build_stack(
        server, workdir, LOG_LEVEL="WARNING", EPHEMERAL_REDIS_URL=ephemeral.url, **overrides
    )
    for name in service_defaults:
        stack.env.pop(name, None)
    baseline_port, next_hop_port = free_port(), free_port()
    next_hop = _baseline("baseline-next-hop", next_hop_port, stack.env)
    baseline = _baseline(
        "baseline",
        baseline_port,
        {**stack.env, "NEXT_HOP_URL": f"http://127.0.0.1:{next_hop_port}"},
    )
    try:
        for name in SERVICES:
            stack.start(name)
        stack.start(ONE_REPLICA_GATEWAY, env={"RECOMMENDER_URLS": stack.url("recommender1")})
        for endpoint in (next_hop, baseline):
            endpoint.start().wait_healthy(timeout=30)
        yield System(stack, server, ephemeral, baseline_port)
    finally:
        baseline.stop()
        next_hop.stop()
        stack.close()
        ephemeral.stop()
        server.stop()


def _baseline(name: str, port: int, env: dict[str, str]) -> ManagedProcess:
    """A bare endpoint (scripts/bench_baseline.py), under the services' uvicorn flags."""
    return ManagedProcess(
        name,
        [*uvicorn_argv("bench_baseline:create_app", port), "--app-dir", str(ROOT / "scripts")],
        env=env,
        health_url=f"http://127.0.0.1:{port}/baseline",
        output=subprocess.DEVNULL,
    )
