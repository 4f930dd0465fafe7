"""Training survives its worker being killed: the task is redelivered, exactly one version is
published for the snapshot, and no half-written artifact is ever visible."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys_shared.artifacts import MANIFEST, ArtifactStore
from recsys_shared.processes import wait_until
from recsys_shared.testing import (
    Stack,
    admin_headers,
    load,
    own_stack,
    taste_clusters,
    wait_for_task,
)
from recsys_shared.testing.fixtures import BESIDE_THE_REST

pytestmark = [pytest.mark.integration, BESIDE_THE_REST]

#: The hard time limit: the slow recipe below must fit well inside it on a loaded machine (the
#: soft limit is 30 s before it); the visibility timeout outlasts it and a retry's wait.
TIME_LIMIT = 45
VISIBILITY_TIMEOUT = TIME_LIMIT + 4


@pytest.fixture
def system(tmp_path: Path) -> Iterator[Stack]:
    with own_stack(
        tmp_path,
        ("feature-store", "gateway", "worker"),
        # Short enough for a test, and still longer than the hard time limit as required.
        BROKER_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        TASK_TIME_LIMIT_SECONDS=str(TIME_LIMIT),
        LOCK_TTL_SECONDS="5",
        # A slow recipe, so the kill lands while the model is fitting.
        ITERATIONS="60",
        FACTORS="96",
    ) as stack:
        items, events = taste_clusters(
            clusters=10, users_per_cluster=150, items_per_cluster=100, events_per_user=15
        )
        load(stack.gateway, items, events, timeout=60)
        yield stack


def task_state(stack: Stack, task_id: str) -> str:
    response = httpx.get(f"{stack.gateway}/v1/tasks/{task_id}", headers=admin_headers(), timeout=5)
    return str(response.json()["state"])


def test_kill_9_of_the_worker_mid_training_publishes_exactly_once(system: Stack) -> None:
    # The configured (slow) ALS recipe, not a search: a search would outlast the time limit.
    task = httpx.post(
        f"{system.gateway}/v1/models/retrain", json={"search": False}, headers=admin_headers()
    )
    task_id = task.json()["task_id"]
    wait_until(
        lambda: task_state(system, task_id) == "STARTED",
        timeout=30,
        interval=0.02,
        what="training to start",
    )
    time.sleep(0.3)
    system.kill("worker")  # the whole process group: a crash, no chance to clean up

    store = ArtifactStore(system.env["ARTIFACT_URL"])
    models = httpx.get(f"{system.gateway}/v1/models", headers=admin_headers(), timeout=5).json()
    assert models == [], "nothing may be published by a training that died"
    # Whatever files the dead training left, none is a published bundle (no manifest).
    assert not [
        name for name in store.list_dirs("models") if store.exists(f"models/{name}/{MANIFEST}")
    ]

    # Redis gives the unacknowledged message back once its visibility timeout has passed.
    time.sleep(VISIBILITY_TIMEOUT)
    system.start("worker")
    result = wait_for_task(system.gateway, task_id, timeout=120)
    assert result["state"] == "SUCCESS", result
    outcome = result["result"]
    assert isinstance(outcome, dict)
    assert outcome["status"] == "published", outcome

    models = httpx.get(f"{system.gateway}/v1/models", headers=admin_headers(), timeout=5).json()
    published = [model for model in models if model["snapshot_id"] == outcome["snapshot_id"]]
    assert len(published) == 1, models
    assert published[0]["status"] == "active"

    # A second delivery of the same work (a retry, a duplicate message) publishes nothing new.
    again = httpx.post(f"{system.gateway}/v1/models/retrain", json={}, headers=admin_headers())
    repeat = wait_for_task(system.gateway, again.json()["task_id"], timeout=60)
    assert repeat["result"]["status"] == "unchanged"  # type: ignore[index]
    assert len(httpx.get(f"{system.gateway}/v1/models", headers=admin_headers()).json()) == 1
