"""A whole system per test module, shared by the cross-service suites (integration, browser):
real redis-server, services and a Celery worker, and one model trained on two taste clusters."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from recsys_shared.processes import RedisServer
from recsys_shared.testing import (
    Stack,
    admin_headers,
    build_stack,
    client_headers,
    taste_clusters,
    wait_for_applied,
    wait_for_task,
)

SERVICES = ("feature-store", "recommender1", "recommender2", "gateway", "worker")


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    system = build_stack(redis_server, tmp_path_factory.mktemp("stack"))
    try:
        for name in SERVICES:
            system.start(name, wait=False)
        for name in SERVICES:
            system.processes[name].wait_healthy(timeout=90)
        yield system
    finally:
        system.close()


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, object]:
    """Load two taste clusters through the API and train one model on them."""
    items, events = taste_clusters()
    with httpx.Client(base_url=stack.gateway, timeout=30) as http:
        stored = http.put("/v1/items", json={"items": items}, headers=client_headers())
        assert stored.status_code == 200, stored.text
        for start in range(0, len(events), 500):
            response = http.post(
                "/v1/events", json={"events": events[start : start + 500]}, headers=client_headers()
            )
            assert response.status_code == 202, response.text
        wait_for_applied(stack.gateway)
        task = http.post("/v1/models/retrain", json={}, headers=admin_headers())
        assert task.status_code == 202, task.text
        result = wait_for_task(stack.gateway, task.json()["task_id"])
    assert result["state"] == "SUCCESS", result
    outcome = result["result"]
    assert isinstance(outcome, dict)
    assert outcome["status"] == "published", outcome
    return outcome
