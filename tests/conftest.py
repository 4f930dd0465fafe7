"""A whole system per test module, shared by the cross-service suites (integration, browser):
real Redis (one node, or a 3-master cluster with a broker beside it), services and a Celery
worker, and one model trained on two taste clusters."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from recsys_shared.testing import (
    DataTier,
    Stack,
    admin_headers,
    build_stack,
    client_headers,
    cluster_tier,
    single_tier,
    start_all,
    taste_clusters,
    wait_for_applied,
    wait_for_task,
)


@pytest.fixture(scope="module", params=["single"])
def tier(request: pytest.FixtureRequest) -> DataTier:
    """The data tier of the module's system: a single Redis unless the module asks for both
    (``pytestmark = pytest.mark.parametrize("tier", ["single", "cluster"], indirect=True)``)."""
    if request.param == "cluster":
        data = cluster_tier(
            request.getfixturevalue("redis_cluster"), request.getfixturevalue("broker_server")
        )
    else:
        data = single_tier(request.getfixturevalue("redis_server"))
    data.flush()
    return data


@pytest.fixture(scope="module")
def stack(tier: DataTier, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    system = build_stack(tier, tmp_path_factory.mktemp("stack"))
    try:
        yield start_all(system)
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
