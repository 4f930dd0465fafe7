"""Redis faults on real processes: full memory, a restart under the Celery worker, a pause."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.processes import wait_until
from recsys_shared.testing import (
    Stack,
    client_headers,
    own_stack,
    retrain,
    taste_clusters,
    view_batch,
    wait_for_applied,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Stack]:
    with own_stack(tmp_path, REDIS_TIMEOUT_SECONDS="0.5") as stack:
        yield stack


def post(stack: Stack, events: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/events", json={"events": events}, headers=client_headers(), timeout=10
    )


def test_redis_at_its_memory_limit_refuses_writes_visibly_and_evicts_nothing(
    system: Stack,
) -> None:
    system.start("gateway")
    admin = redis.Redis.from_url(system.redis.url)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used + 2_000_000)  # a little headroom, then full
    accepted: list[str] = []
    refused = None
    for batch in range(200):
        events = view_batch(f"m{batch}", "u", f"i{batch}", 500)
        response = post(system, events)
        if response.status_code == 202:
            accepted += [str(event["event_id"]) for event in events]
            continue
        refused = response
        break
    assert refused is not None, "Redis never filled up"
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    # Nothing that got a 202 was evicted to make room: every accepted event is in the stream.
    stored = {
        entry[keys.EVENT_FIELD].split('"event_id":"')[1].split('"')[0]
        for _, entry in redis.Redis.from_url(system.redis.url, decode_responses=True).xrange(
            keys.Partition(0).events
        )
    }
    assert set(accepted) <= stored
    assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    # With room again, ingestion resumes.
    admin.config_set("maxmemory", 0)
    assert post(system, [{"user_id": "u", "item_id": "i", "type": "view"}]).status_code == 202


def test_redis_paused_makes_requests_fail_fast_and_readiness_recover(system: Stack) -> None:
    system.start("gateway")
    admin = redis.Redis.from_url(system.redis.url)
    admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    started = time.monotonic()
    response = post(system, [{"user_id": "u", "item_id": "i", "type": "view"}])
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert elapsed < 2.5, "a paused Redis must not hang requests beyond the client timeout"
    ready = httpx.get(f"{system.gateway}/readyz", timeout=5)
    assert ready.status_code == 503
    wait_until(
        lambda: httpx.get(f"{system.gateway}/readyz", timeout=5).status_code == 200,
        timeout=15,
        what="readiness to recover after the pause",
    )
    assert post(system, [{"user_id": "u", "item_id": "i", "type": "view"}]).status_code == 202


def test_the_celery_worker_keeps_consuming_after_a_redis_restart(system: Stack) -> None:
    for name in ("feature-store", "gateway", "worker"):
        system.start(name)
    items, events = taste_clusters()
    httpx.put(
        f"{system.gateway}/v1/items", json={"items": items}, headers=client_headers(), timeout=10
    )
    assert post(system, events[:900]).status_code == 202
    wait_for_applied(system.gateway)

    system.redis.restart()  # a clean restart: the AOF brings every key back

    def accepted() -> bool:
        try:
            return post(system, events[900:]).status_code == 202
        except httpx.TransportError:
            return False

    wait_until(accepted, timeout=30, what="ingestion after the Redis restart")
    wait_for_applied(system.gateway, timeout=60)
    retrain(system.gateway)
    assert httpx.get(f"{system.url('worker')}/healthz", timeout=5).status_code == 200


def test_redis_restarted_under_ingestion_load_loses_no_acknowledged_event(system: Stack) -> None:
    """Four clients send without pause while Redis is killed and started again from its AOF:
    every event that got a 202 is applied, exactly once; no service is restarted."""
    import threading

    for name in ("feature-store", "gateway"):
        system.start(name)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    statuses: list[int] = []

    def sender(worker: int) -> None:
        batch = 0
        with httpx.Client(base_url=system.gateway, headers=client_headers(), timeout=5) as http:
            while not stop.is_set():
                events = view_batch(f"w{worker}-b{batch}", f"w{worker}u", f"i{batch % 50}", 100)
                try:
                    response = http.post("/v1/events", json={"events": events})
                except httpx.TransportError:
                    continue
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 202:
                        acknowledged.extend(str(event["event_id"]) for event in events)
                        batch += 1
                    else:
                        assert response.status_code == 503, response.text

    threads = [threading.Thread(target=sender, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        system.redis.kill()
        time.sleep(1.0)
        system.redis.start()
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert 503 in statuses, "the outage was never seen"
    assert statuses[-1] == 202, "ingestion did not recover"
    wait_for_applied(system.gateway, timeout=60)
    client = redis.Redis.from_url(system.redis.url, decode_responses=True)
    partition = keys.Partition(0)
    applied = int(client.hget(partition.stats, keys.STAT_APPLIED) or 0)
    assert applied == len(acknowledged)
    # Each acknowledged view is in its user's history exactly once (weight 1 per item).
    by_user: dict[str, int] = {}
    for event_id in acknowledged:
        worker, _, index = event_id.split("-")
        by_user[f"{worker}u{index}"] = by_user.get(f"{worker}u{index}", 0) + 1
    for user, count in list(by_user.items())[:50]:
        weights = client.hgetall(partition.user_items(user))
        assert sum(float(weight) for weight in weights.values()) == count, user
