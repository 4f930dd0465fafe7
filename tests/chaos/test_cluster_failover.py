"""A Redis Cluster master killed under ingestion load, on real processes: its replica takes
over, every event answered 202 is applied exactly once, and no service is restarted.

With ``DURABLE_REPLICAS=1`` the gateway answers 202 only once a replica has the events
(``WAIT``), so a master that dies takes nothing acknowledged with it. Until the dead node is
back (its supervisor restarts it, and it rejoins as the new master's replica), the promoted
master has no replica, and its partitions answer 503: acknowledged means on two nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys_shared import keys
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.redis_cluster import RedisCluster
from recsys_shared.testing import (
    Stack,
    build_stack,
    client_headers,
    cluster_tier,
    start_all,
    view_batch,
    wait_for_applied,
)

pytestmark = pytest.mark.integration

PARTITIONS = 6


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[Stack, RedisCluster]]:
    cluster = RedisCluster(tmp_path / "cluster", replicas_per_master=1).start()
    broker = RedisServer(tmp_path / "broker").start()
    tier = cluster_tier(cluster, broker)
    tier.partitions = PARTITIONS
    stack = build_stack(
        tier,
        tmp_path,
        DURABLE_REPLICAS="1",
        DURABLE_REPLICAS_TIMEOUT_MS="500",
        REDIS_TIMEOUT_SECONDS="1",
        CLAIM_IDLE_MS="1000",
        CLAIM_INTERVAL_SECONDS="0.5",
    )
    try:
        yield start_all(stack, ("feature-store", "gateway")), cluster
    finally:
        stack.close()
        broker.stop()
        cluster.stop()


class Senders:
    """Clients sending distinct views and resending a batch until it is acknowledged, as a
    client should after a 503 (the events carry ids, so a resend is never counted twice)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.acknowledged: list[dict[str, object]] = []
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self, worker: int) -> None:
        with httpx.Client(base_url=self.stack.gateway, headers=client_headers(), timeout=5) as http:
            batch = 0
            while not self.stop.is_set():
                events = view_batch(f"w{worker}-{batch}", f"w{worker}u", f"i{batch}", 50)
                while True:  # until acknowledged, even after the senders were told to stop
                    try:
                        status = http.post("/v1/events", json={"events": events}).status_code
                    except httpx.TransportError:
                        status = 0
                    with self.lock:
                        self.statuses.append(status)
                    if status == 202:
                        break
                    assert status in (0, 503), status
                    time.sleep(0.2)
                with self.lock:
                    self.acknowledged += events
                batch += 1


def test_a_killed_master_loses_no_acknowledged_event(
    system: tuple[Stack, RedisCluster],
) -> None:
    stack, cluster = system
    senders = Senders(stack)
    threads = [threading.Thread(target=senders.run, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(senders.acknowledged) > 2000, timeout=30, what="traffic")
        victim = cluster.primary_of(keys.Partition(0).events)
        victim.kill()  # kill -9: no goodbye to its replica or its clients
        cluster.wait_for_failover(victim)
        victim.start()  # as a StatefulSet would: it rejoins as a replica
        wait_until(cluster.healthy, timeout=60, what="the old master back as a replica")
        acknowledged_at_failover = len(senders.acknowledged)
        wait_until(
            lambda: len(senders.acknowledged) > acknowledged_at_failover + 2000,
            timeout=60,
            what="ingestion through the new master",
        )
    finally:
        senders.stop.set()
        for thread in threads:
            thread.join()

    assert 202 in senders.statuses
    wait_for_applied(stack.gateway, timeout=90)
    inspector = stack.tier.inspector()
    partitions = keys.Partitions(PARTITIONS)
    try:
        applied = sum(
            int(inspector.hget(partition.stats, keys.STAT_APPLIED) or 0)
            for partition in partitions.all
        )
        assert applied == len(senders.acknowledged)
        for event in senders.acknowledged[::7]:  # a sample, across every partition
            user, item = str(event["user_id"]), str(event["item_id"])
            weight = inspector.hget(partitions.of(user).user_items(user), item)
            assert weight is not None, event
            assert float(weight) == 1.0, event
    finally:
        inspector.close()
    assert all(process.running() for process in stack.processes.values())
