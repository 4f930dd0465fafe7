"""`make bench-ingest`: events/s accepted and applied end to end, on one shard and on a cluster.

Systems one after the other in the same run, each started as `make run` starts it (every
service, the Celery worker and beat, the ephemeral Redis) on its own Redis:

1. one shard: a single redis-server (AOF, appendfsync always), one event partition;
2. a cluster: 3 masters with a replica each (as `REDIS_CLUSTER=1 make run`: 12 partitions, every
   event on a replica before its 202, i.e. ``WAIT``), and the standalone broker;
3. the same cluster without the ``WAIT`` (``DURABLE_REPLICAS=0``): what durability costs.

For each, once every process has finished starting (the worker and beat import for a few
seconds after the services answer): batches of 1,000 events POSTed to /v1/events by
concurrent clients until every event is applied by the feature-store, then the consumer lag
drained; and the CPU seconds each process spent per 1,000 events (utime + stime from /proc,
children included: the Celery pool). The raw ``XADD`` baseline (the same stored-event
payloads, pipelined, into the same single Redis) is measured first. Prints the figures;
writes reports/bench-ingest.json. ``BENCH_CLUSTER=0`` measures the single Redis only;
``BENCH_EVENTS`` and ``BENCH_CONCURRENCY`` size the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from bench_system import RUN_DEFAULTS

from recsys_shared import keys, testing
from recsys_shared.processes import RedisServer
from recsys_shared.redis_cluster import RedisCluster

ROOT = Path(__file__).resolve().parent.parent
EVENTS = int(os.environ.get("BENCH_EVENTS", "200000"))
BATCH = 1000
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
#: BENCH_CLUSTER=0: the single Redis only (a quicker run while tuning one shard).
WITH_CLUSTER = os.environ.get("BENCH_CLUSTER", "1") != "0"
TARGET = 20_000
SERVICES = ("feature-store", "recommender1", "recommender2", "gateway", "worker", "beat")
TICKS = os.sysconf("SC_CLK_TCK")
#: How long start-up may keep a process busy before the run is abandoned.
SETTLE_TIMEOUT_SECONDS = 60


def bodies(count: int) -> list[bytes]:
    """Pre-serialised request bodies, so the load generator spends its time sending."""
    moment = datetime(2024, 5, 1, tzinfo=UTC).isoformat()
    out = []
    for start in range(0, count, BATCH):
        events = [
            {
                "event_id": f"bench-{index}",
                "user_id": f"u{index % 5000}",
                "item_id": f"i{(index * 7919) % 20000}",
                "type": "click",
                "timestamp": moment,
            }
            for index in range(start, min(start + BATCH, count))
        ]
        out.append(json.dumps({"events": events}).encode())
    return out


def raw_xadd_rate(url: str, count: int) -> float:
    payload = json.dumps(
        {
            "event_id": "bench-x",
            "user_id": "u1",
            "item_id": "i1",
            "type": "click",
            "ts": 1714521600.0,
            "received_at": 1714521600.0,
        }
    )
    client = redis.Redis.from_url(url)
    try:
        client.delete("bench:raw")
        started = time.perf_counter()
        for _ in range(0, count, BATCH):
            with client.pipeline(transaction=False) as pipe:
                for _ in range(BATCH):
                    pipe.xadd("bench:raw", {keys.EVENT_FIELD: payload})
                pipe.execute()
        elapsed = time.perf_counter() - started
        client.delete("bench:raw")
    finally:
        client.close()
    return count / elapsed


async def send_all(gateway: str, payloads: list[bytes]) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in payloads:
        queue.put_nowait(body)
    headers = {**testing.client_headers(), "Content-Type": "application/json"}

    async def sender(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                response = await http.post("/v1/events", content=body, headers=headers)
                if response.status_code == 202:
                    break
                if response.status_code not in (429, 503):
                    raise SystemExit(f"ingestion failed: {response.status_code} {response.text}")
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as http:
        await asyncio.gather(*(sender(http) for _ in range(CONCURRENCY)))
    return time.perf_counter() - started


def applied(tier: testing.DataTier) -> int:
    client = tier.inspector()
    try:
        return sum(
            int(client.hget(partition.stats, keys.STAT_APPLIED) or 0)
            for partition in keys.Partitions(tier.partitions).all
        )
    finally:
        client.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its children that it has waited for, plus its live
    children's (the Celery pool, a uvicorn process's own threads are in its own figures)."""
    total = 0.0
    for each in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        # After the name: state is fields[0]; utime, stime, cutime, cstime are 14-17 (1-based).
        total += sum(int(value) for value in fields[11:15]) / TICKS
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            for child in children.read_text().split():
                found += [int(child), *_children(int(child))]
    return found


@dataclass
class Run:
    name: str
    accepted_per_second: float
    end_to_end_per_second: float
    drain_seconds: float
    max_lag: int
    cpu_per_thousand: dict[str, float]
    #: Redis's own time per 1,000 events by command (INFO commandstats), on a single Redis.
    redis_usec_per_thousand: dict[str, float]


def measure(
    name: str, stack: testing.Stack, redis_pids: dict[str, int], payloads: list[bytes]
) -> Run:
    pids = {service: stack.processes[service].pid for service in SERVICES}
    pids.update(redis_pids)
    settle(pids)
    before = {process: cpu_seconds(pid) for process, pid in pids.items()}
    single = stack.tier.cluster is None
    if single:
        stack.tier.inspector().config_resetstat()
    lag = 0
    started = time.perf_counter()
    send_seconds = asyncio.run(send_all(stack.gateway, payloads))
    while (done := applied(stack.tier)) < EVENTS:
        lag = max(lag, EVENTS - done)
        time.sleep(0.05)
    total_seconds = time.perf_counter() - started
    spent = {process: cpu_seconds(pid) - before[process] for process, pid in pids.items()}
    return Run(
        name=name,
        accepted_per_second=EVENTS / send_seconds,
        end_to_end_per_second=EVENTS / total_seconds,
        drain_seconds=total_seconds - send_seconds,
        max_lag=lag,
        cpu_per_thousand={process: 1000 * value / EVENTS for process, value in spent.items()},
        redis_usec_per_thousand=command_time(stack.tier) if single else {},
    )


def settle(pids: dict[str, int]) -> None:
    """Wait until no process is still starting up: the worker and beat finish importing a
    few seconds after the services answer (~1 CPU s), which would otherwise be counted and
    compete with the run. Measured is the system as it runs for months, not its start."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        before = {process: cpu_seconds(pid) for process, pid in pids.items()}
        time.sleep(1.0)
        if all(cpu_seconds(pid) - before[process] < 0.05 for process, pid in pids.items()):
            return
    raise SystemExit(f"the system did not settle within {SETTLE_TIMEOUT_SECONDS} s")


def command_time(tier: testing.DataTier) -> dict[str, float]:
    """Where a single Redis spends its time: µs per 1,000 events by command. A script's
    figure includes the commands it calls, which are also listed on their own."""
    stats: dict[str, dict[str, float]] = tier.inspector().info("commandstats")
    usec = {name.removeprefix("cmdstat_"): float(row["usec"]) for name, row in stats.items()}
    busiest = sorted(usec.items(), key=lambda kv: -kv[1])[:8]
    return {name: round(1000 * value / EVENTS) for name, value in busiest}


@contextmanager
def system(
    tier: testing.DataTier, workdir: Path, ephemeral: RedisServer, *, durable_replicas: int = 0
) -> Iterator[testing.Stack]:
    """The whole system as `make run` starts it; on a cluster, `make run` waits for one
    replica (``DURABLE_REPLICAS=1``), and 0 measures what that wait costs."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = testing.build_stack(
        tier,
        workdir,
        LOG_LEVEL="WARNING",
        EPHEMERAL_REDIS_URL=ephemeral.url,
        DURABLE_REPLICAS=str(durable_replicas),
    )
    for name in RUN_DEFAULTS:
        stack.env.pop(name, None)
    try:
        yield testing.start_all(stack, SERVICES)
    finally:
        stack.close()


def main() -> None:
    payloads = bodies(EVENTS)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        workdir = Path(folder)
        ephemeral = RedisServer(workdir / "ephemeral", durable=False).start()
        try:
            baseline, single = one_shard(workdir, ephemeral, payloads)
            runs = [single, *(cluster_runs(workdir, ephemeral, payloads) if WITH_CLUSTER else [])]
        finally:
            ephemeral.stop()
    report(baseline, runs)


def one_shard(workdir: Path, ephemeral: RedisServer, payloads: list[bytes]) -> tuple[float, Run]:
    """The raw ``XADD`` baseline, then the system on that same single Redis."""
    server = RedisServer(workdir / "redis").start()
    try:
        baseline = raw_xadd_rate(server.url, EVENTS)
        with system(testing.single_tier(server), workdir / "single", ephemeral) as stack:
            redis_pids = {"redis": server.process.pid}  # type: ignore[union-attr]
            run = measure("one shard (a single Redis)", stack, redis_pids, payloads)
    finally:
        server.stop()
        redis.Redis.from_url(ephemeral.url).flushall()
    return baseline, run


def cluster_runs(workdir: Path, ephemeral: RedisServer, payloads: list[bytes]) -> list[Run]:
    """The system on 3 masters + 3 replicas, with the ``WAIT`` `make run` sets and without."""
    runs = []
    cluster = RedisCluster(workdir / "cluster").start()
    broker = RedisServer(workdir / "broker").start()
    try:
        tier = testing.cluster_tier(cluster, broker)
        tier.partitions = 12
        redis_pids = {
            f"redis node {index}": node.process.pid  # type: ignore[union-attr]
            for index, node in enumerate(cluster.nodes)
        }
        for durable, name in ((1, "as make run: WAIT for 1"), (0, "no WAIT")):
            with system(
                tier, workdir / f"cluster-{durable}", ephemeral, durable_replicas=durable
            ) as stack:
                label = f"3 masters + 3 replicas, {name}"
                runs.append(measure(label, stack, redis_pids, payloads))
            redis.Redis.from_url(ephemeral.url).flushall()
            cluster.flush()
    finally:
        broker.stop()
        cluster.stop()
    return runs


def report(baseline: float, runs: list[Run]) -> None:
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}",
        "events": EVENTS,
        "batch": BATCH,
        "concurrency": CONCURRENCY,
        "raw_xadd_events_per_second": round(baseline),
        "target_events_per_second": TARGET,
        "runs": [
            {
                "name": run.name,
                "accepted_events_per_second": round(run.accepted_per_second),
                "end_to_end_events_per_second": round(run.end_to_end_per_second),
                "seconds_to_drain_after_last_accept": round(run.drain_seconds, 2),
                "max_lag_events": run.max_lag,
                "cpu_seconds_per_1000_events": {
                    process: round(value, 4) for process, value in run.cpu_per_thousand.items()
                },
                "redis_usec_per_1000_events_by_command": run.redis_usec_per_thousand,
            }
            for run in runs
        ],
    }
    print(f"ingestion benchmark — {results['machine']}, {results['date']}")
    print(f"  raw XADD baseline (one Redis, pipelined): {baseline:>10,.0f} events/s")
    for run in runs:
        print(f"  {run.name}:")
        print(f"    accepted through the gateway:   {run.accepted_per_second:>10,.0f} events/s")
        print(
            f"    end to end (accepted, applied): {run.end_to_end_per_second:>10,.0f} events/s"
            f"   (target ≥ {TARGET:,} on one shard)"
        )
        print(f"    max lag {run.max_lag:,} events, drained {run.drain_seconds:.2f} s after")
        busy = sorted(run.cpu_per_thousand.items(), key=lambda kv: -kv[1])
        print(
            "    CPU s per 1,000 events: "
            + ", ".join(f"{process} {value:.3f}" for process, value in busy if value >= 0.0005)
        )
        if run.redis_usec_per_thousand:
            print(
                "    Redis µs per 1,000 events by command: "
                + ", ".join(
                    f"{name} {value:,.0f}" for name, value in run.redis_usec_per_thousand.items()
                )
            )
    path = ROOT / "reports" / "bench-ingest.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"  written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    testing.interrupt_on_sigterm()
    main()
