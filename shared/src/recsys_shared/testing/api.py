"""The system's public API as the cross-service tests (and the demos) drive it: the keys, data
in through the gateway, a model trained on it, and waiting for what happens behind it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from recsys_shared.processes import wait_until
from recsys_shared.schemas import MAX_BATCH_EVENTS

#: Answers a client waits out and asks again: rate-limited, or briefly unavailable.
RETRYABLE = frozenset({429, 503})

CLIENT_KEY = "test-client-key"
ADMIN_KEY = "test-admin-key"
API_KEYS = f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin"


def client_headers() -> dict[str, str]:
    return {"X-API-Key": CLIENT_KEY}


def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def recommendations(http: httpx.Client, user: str, **params: int) -> dict[str, Any]:
    """A user's list as a polite client gets it: a 429 waits its ``Retry-After`` and asks
    again (several threads on cached lists pass the key's 1,000 requests a second on a fast
    machine), anything else but a 200 fails with the answer's body."""
    while True:
        response = http.get(
            f"/v1/users/{user}/recommendations", params=params, headers=client_headers()
        )
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    assert response.status_code == 200, (user, response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


def wait_for_applied(gateway: str, *, timeout: float = 30.0, trimmed: bool = False) -> None:
    """Until the feature-store has applied everything the gateway accepted (and, with
    ``trimmed``, trimmed it from the streams)."""

    def caught_up() -> bool:
        response = httpx.get(f"{gateway}/v1/pipeline", headers=admin_headers(), timeout=5)
        if response.status_code in RETRYABLE:  # e.g. Redis still loading its AOF after a restart
            return False
        response.raise_for_status()
        body = response.json()
        done = body["consumer_lag"] == 0 and body["pending"] == 0
        return bool(done and (not trimmed or body["stream_length"] == 0))

    wait_until(caught_up, timeout=timeout, interval=0.1, what="events to be applied")


def wait_for_task(gateway: str, task_id: str, *, timeout: float = 120.0) -> dict[str, Any]:
    """The task's status as `GET /v1/tasks/{id}` answers it (JSON) once it has finished."""
    result: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal result
        result = httpx.get(
            f"{gateway}/v1/tasks/{task_id}", headers=admin_headers(), timeout=5
        ).json()
        return result.get("state") in {"SUCCESS", "FAILURE"}

    wait_until(finished, timeout=timeout, interval=0.2, what=f"task {task_id}")
    return result


def send_events(http: httpx.Client, events: Sequence[dict[str, object]]) -> int:
    """Post ``events`` through ``http`` (a client on the gateway) in the largest batches the
    API takes, each one acknowledged with a 202; how many the gateway accepted."""
    accepted = 0
    for start in range(0, len(events), MAX_BATCH_EVENTS):
        batch = list(events[start : start + MAX_BATCH_EVENTS])
        response = http.post("/v1/events", json={"events": batch}, headers=client_headers())
        assert response.status_code == 202, response.text
        accepted += int(response.json()["accepted"])
    return accepted


def load(
    gateway: str,
    items: Sequence[dict[str, object]],
    events: Sequence[dict[str, object]],
    *,
    timeout: float = 30.0,
) -> int:
    """The catalogue and the events through the API, then until the feature-store has applied
    them all (``timeout`` seconds at most); how many events the gateway accepted."""
    with httpx.Client(base_url=gateway, timeout=30) as http:
        stored = http.put("/v1/items", json={"items": list(items)}, headers=client_headers())
        assert stored.status_code == 200, stored.text
        accepted = send_events(http, events)
    wait_for_applied(gateway, timeout=timeout)
    return accepted


def retrain(gateway: str, *, timeout: float = 120.0, **body: object) -> dict[str, object]:
    """Ask for a retrain (``body`` is the request's, e.g. ``force=True``), wait for the task and
    check that it published a version; the task's outcome (version, metrics, …)."""
    task = httpx.post(
        f"{gateway}/v1/models/retrain", json=body, headers=admin_headers(), timeout=30
    )
    assert task.status_code == 202, task.text
    result = wait_for_task(gateway, task.json()["task_id"], timeout=timeout)
    assert result["state"] == "SUCCESS", result
    outcome = result["result"]
    assert isinstance(outcome, dict)
    assert outcome["status"] == "published", outcome
    return outcome


def train(
    gateway: str, items: Sequence[dict[str, object]], events: Sequence[dict[str, object]]
) -> dict[str, object]:
    """:func:`load` the data, then :func:`retrain` on it: a system with a model that knows it."""
    load(gateway, items, events)
    return retrain(gateway)
