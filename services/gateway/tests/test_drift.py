"""GET /v1/drift: the drift monitor's reports as the retraining-worker stores them (admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from recsys_shared import keys
from recsys_shared.schemas import DriftOverview, DriftReport, OnlineHitRate
from recsys_shared.testing import assert_problem


def _report(minutes: int, **fields: Any) -> DriftReport:
    checked = datetime(2024, 5, 1, 12, tzinfo=UTC) + timedelta(minutes=minutes)
    values: dict[str, Any] = {
        "status": "ok",
        "checked_at": checked,
        "window_hours": 24,
        "window_start": checked - timedelta(hours=23),
        "events": 1000 + minutes,
        "model_version": 3,
        "snapshot_id": "1714564800000-0.g0",
        "psi": 0.01,
        "unknown_user_share": 0.02,
        "unknown_item_share": 0.0,
        "event_types": {"view": 0.75, "like": 0.25},
        "hit_rate": {"3": OnlineHitRate(events=40, hits=10, hit_rate=0.25)},
        **fields,
    }
    return DriftReport(**values)


def _store(store: redis.Redis, reports: list[DriftReport]) -> None:
    """As the worker stores them: LPUSH each (oldest first), the latest in its own key."""
    for report in reports:
        store.lpush(keys.DRIFT_HISTORY, report.model_dump_json())
        store.set(keys.DRIFT_LATEST, report.model_dump_json())


def test_drift_needs_an_admin_key(gateway: Any, client_headers: dict[str, str]) -> None:
    assert gateway.client.get("/v1/drift").status_code == 401
    refused = gateway.client.get("/v1/drift", headers=client_headers)
    assert_problem(refused, 403)
    assert gateway.client.post("/v1/drift/check", headers=client_headers).status_code == 403


def test_no_report_yet(gateway: Any, admin_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/drift", headers=admin_headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"latest": None, "history": []}


def test_the_latest_report_and_the_history_newest_first(
    gateway: Any, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    reports = [
        _report(0),
        _report(5),
        _report(
            10,
            status="drift",
            psi=0.8,
            reasons=["item popularity PSI 0.800 > 0.2"],
            triggered_task_id="t-1",
        ),
    ]
    _store(store, reports)

    response = gateway.client.get("/v1/drift", headers=admin_headers)
    limited = gateway.client.get("/v1/drift?limit=2", headers=admin_headers)

    assert response.status_code == 200, response.text
    body = DriftOverview.model_validate(response.json())
    assert body.latest == reports[-1]
    assert body.latest is not None
    assert body.latest.triggered_task_id == "t-1"
    assert body.history == reports[::-1]
    assert DriftOverview.model_validate(limited.json()).history == reports[:0:-1]
    assert gateway.client.get("/v1/drift?limit=0", headers=admin_headers).status_code == 422
