"""`make bench-ingest`: events/s through the gateway and applied by the feature-store, end to end.

Starts its own redis-server (AOF, appendfsync always: the durability the API promises), gateway
and feature-store on free loopback ports. Measures, in the same run:

- the baseline: raw XADD of the same stored-event payloads into the same Redis, pipelined
  1000 per round trip, from one client;
- end to end: batches of 1000 events POSTed to /v1/events by concurrent clients, until every
  event is applied by the feature-store's consumer; with the consumer lag sampled over time.

Prints the figures and writes them to reports/bench-ingest.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis

from recsys_shared import keys
from recsys_shared.processes import RedisServer
from recsys_shared.testing import build_stack, client_headers

ROOT = Path(__file__).resolve().parent.parent
EVENTS = int(os.environ.get("BENCH_EVENTS", "200000"))
BATCH = 1000
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
TARGET = 20_000


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
                    pipe.xadd("bench:raw", {"e": payload})
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
    headers = {**client_headers(), "Content-Type": "application/json"}

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


def applied(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.hget(keys.PIPELINE_STATS, "applied") or 0)
    finally:
        client.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
        server = RedisServer(Path(workdir) / "redis").start()
        # Bulk ingestion: 2,000 events a consumer batch (the service default, 500, keeps each
        # apply script short, for the read latency of everything else sharing Redis).
        stack = build_stack(
            server,
            Path(workdir),
            LOG_LEVEL="WARNING",
            CONSUMER_BATCH_SIZE=os.environ.get("BENCH_CONSUMER_BATCH", "2000"),
        )
        try:
            stack.start("gateway")
            stack.start("feature-store")
            payloads = bodies(EVENTS)
            baseline = raw_xadd_rate(server.url, EVENTS)

            lag: list[tuple[float, int]] = []
            started = time.perf_counter()
            send_seconds = asyncio.run(send_all(stack.gateway, payloads))
            while applied(server.url) < EVENTS:
                lag.append((time.perf_counter() - started, EVENTS - applied(server.url)))
                time.sleep(0.1)
            total_seconds = time.perf_counter() - started
        finally:
            stack.close()
            server.stop()
    accepted_rate = EVENTS / send_seconds
    end_to_end = EVENTS / total_seconds
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}",
        "events": EVENTS,
        "batch": BATCH,
        "concurrency": CONCURRENCY,
        "consumer_batch": int(os.environ.get("BENCH_CONSUMER_BATCH", "2000")),
        "raw_xadd_events_per_second": round(baseline),
        "accepted_events_per_second": round(accepted_rate),
        "end_to_end_events_per_second": round(end_to_end),
        "end_to_end_vs_raw_xadd": round(end_to_end / baseline, 3),
        "max_lag_events": max((value for _, value in lag), default=0),
        "seconds_to_drain_after_last_accept": round(total_seconds - send_seconds, 2),
        "target_events_per_second": TARGET,
        "lag_over_time": [
            (round(moment, 2), value) for moment, value in lag[:: max(1, len(lag) // 20)]
        ],
    }
    rows = [
        ("raw XADD baseline (same Redis, pipelined)", results["raw_xadd_events_per_second"], ""),
        ("accepted through the gateway", results["accepted_events_per_second"], ""),
        (
            "end to end (accepted and applied)",
            results["end_to_end_events_per_second"],
            f"  = {results['end_to_end_vs_raw_xadd']:.2f}× raw XADD   (target ≥ {TARGET:,})",
        ),
    ]
    print(f"ingestion benchmark — {results['machine']}, {results['date']}")
    for label, rate, note in rows:
        print(f"  {label + ':':<44}{rate:>9,} events/s{note}")
    print(
        f"  max consumer lag: {results['max_lag_events']:,} events; drained "
        f"{results['seconds_to_drain_after_last_accept']} s after the last 202"
    )
    print(
        "  lag over time (s, events): " + ", ".join(f"{t}:{v}" for t, v in results["lag_over_time"])
    )
    report = ROOT / "reports" / "bench-ingest.json"
    report.parent.mkdir(exist_ok=True)
    report.write_text(json.dumps(results, indent=2))
    print(f"  written to {report.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
