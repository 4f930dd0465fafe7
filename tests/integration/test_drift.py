"""Drift on real processes: a model trained through the API, then traffic on brand-new users and
items; a drift check enqueues exactly one retrain, and a second check within the cool-down none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys_shared import testing

pytestmark = pytest.mark.integration


@pytest.fixture
def system(tmp_path: Path) -> Iterator[testing.Stack]:
    with testing.own_stack(
        tmp_path,
        ("feature-store", "gateway", "worker"),
        DRIFT_MIN_EVENTS="200",
        DRIFT_WINDOW_HOURS="2",
        DRIFT_COOLDOWN_SECONDS="600",
    ) as stack:
        yield stack


def check_drift(http: httpx.Client, gateway: str) -> dict[str, object]:
    task = http.post("/v1/drift/check", headers=testing.admin_headers())
    assert task.status_code == 202, task.text
    result = testing.wait_for_task(gateway, task.json()["task_id"], timeout=60)
    assert result["state"] == "SUCCESS", result
    report = result["result"]
    assert isinstance(report, dict)
    return report


def test_drift_triggers_exactly_one_retrain(system: testing.Stack) -> None:
    items, events = testing.taste_clusters()
    testing.train(system.gateway, items, events)
    with httpx.Client(base_url=system.gateway, timeout=30) as http:
        # Traffic like the training data: no drift (the training events are in the window).
        calm = check_drift(http, system.gateway)
        assert calm["status"] == "ok", calm
        assert calm["model_version"] == 1
        assert calm["unknown_user_share"] == 0.0
        assert calm["triggered_task_id"] is None

        # An event from a served list counts towards the online hit rate of what served it
        # (no recommender runs here: the gateway's popular fallback answers).
        served = http.get(
            "/v1/users/a1/recommendations?k=5", headers=testing.client_headers()
        ).json()
        testing.send_events(
            http,
            [
                {
                    "user_id": "a1",
                    "item_id": served["items"][0]["item_id"],
                    "type": "click",
                    "recommendation_id": served["recommendation_id"],
                }
            ],
        )
        # Then the world changes: new users on new items, as many events as the training had.
        testing.send_events(
            http,
            [
                {"user_id": f"newcomer{n % 80}", "item_id": f"NEW{n % 40}", "type": "view"}
                for n in range(len(events))
            ],
        )
        testing.wait_for_applied(system.gateway)

        drifted = check_drift(http, system.gateway)
        again = check_drift(http, system.gateway)
        overview = http.get("/v1/drift", headers=testing.admin_headers()).json()
        retrain_id = drifted["triggered_task_id"]
        assert isinstance(retrain_id, str)
        retrained = testing.wait_for_task(system.gateway, retrain_id)
        models = http.get("/v1/models", headers=testing.admin_headers()).json()

    assert drifted["status"] == "drift", drifted
    assert drifted["unknown_user_share"] > 0.3  # type: ignore[operator]
    assert drifted["unknown_item_share"] > 0.3  # type: ignore[operator]
    assert drifted["psi"] > 0.2  # type: ignore[operator]
    assert drifted["event_types"]["view"] > 0.4  # type: ignore[index]
    assert drifted["hit_rate"]["popular"] == {"events": 1, "hits": 1, "hit_rate": 1.0}  # type: ignore[index]
    # The second check still sees drift, but the cool-down holds: no second retrain.
    assert again["status"] == "drift"
    assert again["triggered_task_id"] is None
    assert again["trigger_skipped"]
    history = overview["history"]
    assert [report["checked_at"] for report in history] == [
        again["checked_at"],
        drifted["checked_at"],
        calm["checked_at"],
    ]
    assert overview["latest"] == history[0]
    assert [report["triggered_task_id"] for report in history if report["triggered_task_id"]] == [
        retrain_id
    ]
    # The retrain ran, on the data that now includes the new users and items.
    assert retrained["state"] == "SUCCESS", retrained
    assert retrained["result"]["status"] in {"published", "rejected"}  # type: ignore[index]
    assert len(models) == 2
