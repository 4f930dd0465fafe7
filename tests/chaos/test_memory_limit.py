"""The whole system at Redis's memory limit, on real processes: reads go on, events are
refused with a 503 the client can retry, and once the consumers have applied and trimmed the
backlog, events are accepted again; nothing acknowledged is lost, nothing is restarted.

The backlog is made by pausing the feature-store (SIGSTOP, as a long GC pause or a starved
node would) while events pour in: Redis fills with unapplied events, and the consumers must
drain them while Redis is still at its limit."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.testing import (
    SERVICES,
    Stack,
    client_headers,
    own_stack,
    taste_clusters,
    train,
    wait_for_applied,
)

pytestmark = pytest.mark.integration

#: Room left above what Redis holds once the model is trained: a couple of seconds of
#: applied-but-not-yet-trimmed stream entries fill it.
HEADROOM_BYTES = 1_500_000


@pytest.fixture
def system(ephemeral_server: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    with own_stack(tmp_path, SERVICES, EPHEMERAL_REDIS_URL=ephemeral_server.url) as stack:
        yield stack


def _one_view(stack: Stack) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/events",
        json={"events": [{"user_id": "a1", "item_id": "A1", "type": "view"}]},
        headers=client_headers(),
        timeout=10,
    )


class Traffic:
    """Readers and senders on threads, counting every answer."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.reads: Counter[int] = Counter()
        self.writes: Counter[int] = Counter()
        self.accepted = 0
        self.retry_after: set[str] = set()
        self.problems: set[str] = set()
        self.sending = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _gateway(self) -> httpx.Client:
        """A client of the gateway for one reader or sender thread."""
        return httpx.Client(base_url=self.stack.gateway, headers=client_headers(), timeout=10)

    def read(self, seed: int) -> None:
        generator = random.Random(seed)
        with self._gateway() as http:
            while not self.stop.is_set():
                user = f"{generator.choice('ab')}{generator.randrange(40)}"
                path = generator.choice(
                    [
                        f"/v1/users/{user}/recommendations?k=5&offset={generator.randrange(20)}",
                        "/v1/items/popular?k=5",
                        f"/v1/items/A{generator.randrange(30)}/similar?k=5",
                    ]
                )
                status = http.get(path).status_code
                with self.lock:
                    self.reads[status] += 1
                time.sleep(0.005)

    def send(self, seed: int) -> None:
        generator = random.Random(seed)
        with self._gateway() as http:
            while not self.stop.is_set():
                if not self.sending.is_set():
                    time.sleep(0.01)
                    continue
                # The same user-item pairs again and again: the features stop growing, and
                # what fills Redis is the stream, as during a backlog.
                events = [
                    {
                        "user_id": f"a{generator.randrange(40)}",
                        "item_id": f"A{generator.randrange(30)}",
                        "type": "view",
                    }
                    for _ in range(500)
                ]
                response = http.post("/v1/events", json={"events": events})
                with self.lock:
                    self.writes[response.status_code] += 1
                    if response.status_code == 202:
                        self.accepted += response.json()["accepted"]
                    else:
                        self.retry_after.add(response.headers.get("Retry-After", ""))
                        self.problems.add(response.headers.get("content-type", ""))


def _applied(stack: Stack) -> int:
    with stack.redis.inspector() as client:
        return int(client.hget(keys.Partition(0).stats, keys.STAT_APPLIED) or 0)


def test_a_full_redis_serves_reads_refuses_events_and_recovers_by_itself(system: Stack) -> None:
    train(system.gateway, *taste_clusters())
    admin = redis.Redis.from_url(system.redis.url)
    applied_before = _applied(system)
    pids = {name: process.pid for name, process in system.processes.items()}
    traffic = Traffic(system)
    threads = [threading.Thread(target=traffic.read, args=(seed,)) for seed in range(2)]
    threads += [threading.Thread(target=traffic.send, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    consumer = system.processes["feature-store"]
    try:
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + HEADROOM_BYTES)
        consumer.signal_group(signal.SIGSTOP)
        traffic.sending.set()
        wait_until(lambda: traffic.writes[503] >= 3, timeout=60, what="Redis to fill up and refuse")
        traffic.sending.clear()
        time.sleep(1)  # the last batches answered: their buffers are gone from Redis too
        # Held at its limit: below what it uses now, so that only applying and trimming the
        # backlog (never the connections' buffers coming and going) can make room again.
        admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 100_000)
        full = _one_view(system)
        assert full.status_code == 503, full.text
        time.sleep(2)  # reads go on while Redis is full
        consumer.signal_group(signal.SIGCONT)
    finally:
        consumer.signal_group(signal.SIGCONT)
        traffic.stop.set()
        for thread in threads:
            thread.join()

    assert set(traffic.reads) == {200}, traffic.reads
    assert set(traffic.writes) <= {202, 503}, traffic.writes
    assert traffic.problems == {"application/problem+json"}
    assert all(int(seconds) >= 1 for seconds in traffic.retry_after)
    # Nothing restarted: the consumers apply and trim what waits, under the same limit.
    wait_for_applied(system.gateway, timeout=60, trimmed=True)
    again = _one_view(system)
    assert again.status_code == 202, again.text
    wait_for_applied(system.gateway, timeout=30)
    assert _applied(system) - applied_before == traffic.accepted + 1
    assert admin.config_get("maxmemory")["maxmemory"] != "0"  # still at its limit
    assert {name: process.pid for name, process in system.processes.items()} == pids
    assert all(process.running() for process in system.processes.values())
    health = httpx.get(f"{system.url('feature-store')}/healthz", timeout=5)
    assert health.status_code == 200, health.text
