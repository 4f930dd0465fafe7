"""The ingestion pipeline loses nothing and counts nothing twice, through crashes.

Real processes: a redis-server of this module's own (so it can be killed), the gateway and the
feature-store. Every event is a distinct (user, item) "view" of weight 1, so any event applied
twice shows up as a weight of 2 or an epoch above the number of events.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from recsys_shared import keys
from recsys_shared.processes import wait_until
from recsys_shared.testing import (
    Stack,
    build_stack,
    client_headers,
    cluster_tier,
    own_stack,
    start_all,
    wait_for_applied,
)

pytestmark = pytest.mark.integration

TIMESTAMP = datetime(2024, 5, 1, tzinfo=UTC).isoformat()
OPTIONS = {
    "CONSUMER_BATCH_SIZE": "50",
    "CLAIM_IDLE_MS": "500",
    "CLAIM_INTERVAL_SECONDS": "0.5",
    "REDIS_TIMEOUT_SECONDS": "0.5",
}


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Stack]:
    """The gateway on a redis-server of its own (tests that kill Redis)."""
    with own_stack(tmp_path, ("gateway",), **OPTIONS) as stack:
        yield stack


@pytest.fixture(params=["single", "cluster"])
def any_system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """The gateway on a Redis of its own, then on the session's 3-master cluster."""
    if request.param == "single":
        yield request.getfixturevalue("system")
        return
    tier = cluster_tier(
        request.getfixturevalue("redis_cluster"), request.getfixturevalue("broker_server")
    )
    tier.flush()
    stack = build_stack(tier, tmp_path, **OPTIONS)
    try:
        yield start_all(stack, ("gateway",))
    finally:
        stack.close()


def views(prefix: str, users: int, items: int) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{prefix}-{user}-{item}",
            "user_id": f"{prefix}u{user}",
            "item_id": f"i{item}",
            "type": "view",
            "timestamp": TIMESTAMP,
        }
        for user in range(users)
        for item in range(items)
    ]


def post(
    stack: Stack, events: list[dict[str, object]], *, retry_for: float = 0.0
) -> dict[str, int]:
    """POST in batches of 1000; with ``retry_for``, retry 503s as a client should."""
    totals = {"accepted": 0, "duplicates": 0}
    for start in range(0, len(events), 1000):
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = httpx.post(
                    f"{stack.gateway}/v1/events",
                    json={"events": events[start : start + 1000]},
                    headers=client_headers(),
                    timeout=10,
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 202:
                break
            if response is not None:
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["Retry-After"]) >= 1
            assert time.monotonic() < deadline, "the gateway never accepted the batch"
            time.sleep(0.2)
        for key, value in response.json().items():
            totals[key] += value
    return totals


def assert_applied_exactly_once(stack: Stack, prefix: str, users: int, items: int) -> None:
    partitions = keys.Partitions(stack.tier.partitions)
    client = stack.tier.inspector()
    try:
        for user in range(users):
            user_id = f"{prefix}u{user}"
            partition = partitions.of(user_id)
            weights = client.hgetall(partition.user_items(user_id))
            assert len(weights) == items, (user_id, len(weights))
            assert {float(value) for value in weights.values()} == {1.0}, user_id
            epoch = client.hget(partition.user_meta(user_id), keys.META_EPOCH)
            assert int(epoch or 0) == items, user_id
        # Each item's popularity, summed over the partitions, counts every view once.
        scores: Counter[str] = Counter()
        for partition in partitions.all:
            scores.update(dict(client.zrange(partition.popular, 0, -1, withscores=True)))
        assert len({round(score / scores["i0"], 6) for score in scores.values()}) == 1
    finally:
        client.close()


def applied_count(stack: Stack) -> int:
    client = stack.tier.inspector()
    try:
        return sum(
            int(client.hget(partition.stats, keys.STAT_APPLIED) or 0)
            for partition in keys.Partitions(stack.tier.partitions).all
        )
    finally:
        client.close()


def test_kill_9_of_the_consumer_mid_stream_applies_every_event_exactly_once(
    any_system: Stack,
) -> None:
    system = any_system
    users, items = 100, 100
    sent = post(system, views("k", users, items))
    assert sent == {"accepted": users * items, "duplicates": 0}

    system.start("feature-store")
    wait_until(lambda: applied_count(system) > 0, timeout=30, interval=0.005, what="first batch")
    system.kill("feature-store")
    applied_at_crash = applied_count(system)
    assert applied_at_crash < users * items, "the consumer finished before it could be killed"

    # A replacement replica under another name: it claims what the dead one left pending.
    system.env["CONSUMER_NAME"] = "replacement"
    system.start("feature-store")
    wait_for_applied(system.gateway, timeout=60)
    assert applied_count(system) == users * items
    assert_applied_exactly_once(system, "k", users, items)


def test_redis_restarted_from_its_aof_loses_no_acknowledged_event(system: Stack) -> None:
    system.start("feature-store")
    users, items = 20, 50
    first, second = views("a", users, items // 2), views("b", users, items // 2)
    assert post(system, first)["accepted"] == len(first)

    system.redis.kill()  # a crash, not a clean shutdown: only what was fsynced survives
    refused = httpx.post(
        f"{system.gateway}/v1/events",
        json={"events": second[:10]},
        headers=client_headers(),
        timeout=10,
    )
    assert refused.status_code == 503, refused.text
    system.redis.start()

    assert post(system, second, retry_for=30)["accepted"] == len(second)
    wait_for_applied(system.gateway, timeout=60)
    assert_applied_exactly_once(system, "a", users, items // 2)
    assert_applied_exactly_once(system, "b", users, items // 2)


def test_resubmitted_events_are_counted_as_duplicates_and_applied_once(system: Stack) -> None:
    system.start("feature-store")
    events = views("d", 10, 10)
    assert post(system, events) == {"accepted": 100, "duplicates": 0}
    assert post(system, events) == {"accepted": 0, "duplicates": 100}
    mixed = events[:50] + views("e", 5, 10)
    assert post(system, mixed) == {"accepted": 50, "duplicates": 50}
    wait_for_applied(system.gateway)
    assert_applied_exactly_once(system, "d", 10, 10)
    assert_applied_exactly_once(system, "e", 5, 10)
