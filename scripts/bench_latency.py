"""The p99 at half of the uncached peak, from an open-loop client at a fixed rate.

Requests are sent on a fixed schedule, whether or not earlier ones have been answered; each
latency counts from the moment the request was due, so a stall is not hidden by the requests
it delayed (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from bench_system import System
from bench_workload import API_KEY_HEADER, Workload
from bench_wrk import DURATION, say

from recsys_shared.fastpath.http_client import HttpClient, HttpClientError, Origin
from recsys_shared.processes import wait_until

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TARGET_P99_MS = 25
T = TypeVar("T")


def at_half_peak(system: System, workload: Workload, peak: float) -> dict[str, Any]:
    """ROUNDS open-loop runs at half of ``peak`` through the one-replica gateway, the cache
    emptied before each; the figures of the median run by p99."""
    rate = max(peak / 2, 1)
    say(f"  uncached at half of peak ({rate:,.0f} req/s, open loop, {ROUNDS} runs)…")
    runs = []
    for _ in range(ROUNDS):
        system.forget_cached_lists()
        compact_append_only_file(system.server.url)
        runs.append(
            without_collector_pauses(
                lambda: asyncio.run(open_loop(system.one_replica, workload, rate))
            )
        )
    p99s = [run["p99_ms"] for run in runs]
    median_run = runs[median_index(p99s)]
    return {**median_run, "p99_ms_per_run": p99s, "target_p99_ms": TARGET_P99_MS}


async def open_loop(gateway: str, workload: Workload, rate: float) -> dict[str, float]:
    """DURATION seconds of ``workload``'s uncached requests at ``rate``. The client is the
    system's own lean one (recsys_shared.fastpath.http_client): ~25 us of CPU a request, on
    the shared cores."""
    latencies: list[float] = []
    errors = 0
    generator = random.Random(3)
    origin = Origin.from_url(gateway)
    http = HttpClient(timeout=10.0, max_connections_per_origin=512)
    loop = asyncio.get_running_loop()

    async def one(due: float, target: str, key: str) -> None:
        nonlocal errors
        try:
            response = await http.get(origin, target, [(API_KEY_HEADER, key)])
            errors += response.status != 200
        except HttpClientError:
            errors += 1
        latencies.append((loop.time() - due) * 1000)

    tasks = []
    start = loop.time() + 0.1
    for index in range(int(rate * DURATION)):
        due = start + index / rate
        await asyncio.sleep(max(due - loop.time(), 0))
        target, key = workload.draw(generator)
        tasks.append(asyncio.create_task(one(due, target, key)))
    await asyncio.gather(*tasks)
    await http.aclose()
    latencies.sort()
    return {
        "rate_per_second": round(rate),
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p95_ms": round(latencies[int(len(latencies) * 0.95)], 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "max_ms": round(latencies[-1], 2),
    }


def median_index(values: list[float]) -> int:
    return sorted(range(len(values)), key=values.__getitem__)[len(values) // 2]


def without_collector_pauses(run: Callable[[], T]) -> T:
    """Run the load generator with this process's garbage collector off: the bench holds the
    whole synthetic data set, and a full collection of it stalls the sender for tens of
    milliseconds, which the open-loop client would count as the system's latency."""
    gc.collect()
    gc.disable()
    try:
        return run()
    finally:
        gc.enable()


def compact_append_only_file(redis_url: str) -> None:
    """Rewrite Redis's append-only file now, and wait until it is on disk: the throughput
    rounds write hundreds of megabytes of cache entries and records, and the rewrite Redis
    would start on its own (a fork, a copy of the data set, then its writeback) would land in
    the middle of a latency run. Production sees such rewrites too, as latency spikes;
    docs/benchmarks.md says how large."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with contextlib.suppress(redis.exceptions.ResponseError):  # one is already running
        client.bgrewriteaof()
    wait_until(
        lambda: not int(client.info("persistence")["aof_rewrite_in_progress"]),
        timeout=120,
        interval=0.2,
        what="the append-only file rewrite",
    )
    client.close()
    # The rewritten file is still being written back to the disk: Redis's own fsyncs (one
    # per write batch, appendfsync always) would queue behind it for the first seconds.
    os.sync()
    time.sleep(1.0)
