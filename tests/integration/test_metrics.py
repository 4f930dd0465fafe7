"""Every service's /metrics: before any traffic, every counter an alert rule or a dashboard
reads is there (at zero: a rule sees 0, not nothing); after the whole loop ran, each family
is there and moved."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from recsys_shared.testing import (
    Stack,
    admin_headers,
    client_headers,
    wait_for_applied,
    wait_for_task,
)

pytestmark = pytest.mark.integration

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
#: One of each kind of process: the replicas of a kind export the same families.
EXPORTERS = ("gateway", "recommender1", "feature-store", "worker")


def scrape(stack: Stack, service: str) -> str:
    response = httpx.get(f"{stack.url(service)}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def value(text: str, family: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include ``labels`` (0 when there are none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(family) or line.startswith("#"):
            continue
        name, _, sample = line.rpartition(" ")
        if not re.fullmatch(rf"{re.escape(family)}(\{{.*\}})?", name):
            continue
        if all(f'{key}="{wanted}"' in name for key, wanted in labels.items()):
            total += float(sample)
    return total


def families(text: str) -> set[str]:
    """The names of the samples of an exposition (a labelled family with no sample is none)."""
    return {
        match.group(0)
        for line in text.splitlines()
        if not line.startswith("#") and (match := re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line))
    }


def counters_read_by_rules_and_dashboards() -> set[str]:
    texts = [path.read_text() for path in (MONITORING / "prometheus" / "rules").glob("*.yml")]
    texts += [path.read_text() for path in (MONITORING / "grafana" / "dashboards").glob("*.json")]
    return {name for text in texts for name in re.findall(r"\brecsys_[a-z_]+_total\b", text)}


def test_every_counter_a_rule_or_dashboard_reads_is_exported_from_start_up(stack: Stack) -> None:
    # First in the module: the system has served nothing yet. Checked, not assumed: after
    # traffic a counter is exported because it moved, and the test could no longer fail.
    read = counters_read_by_rules_and_dashboards()
    scrapes = [scrape(stack, service) for service in EXPORTERS]
    exported = set().union(*(families(text) for text in scrapes))

    assert {"recsys_dead_letters_total", "recsys_fallbacks_total"} <= read
    assert read - exported == set()
    moved = {family for family in read for text in scrapes if value(text, family)}
    assert moved == set(), "counters moved before any traffic: the check above proves nothing"


def test_every_service_exports_its_families_and_they_moved(
    stack: Stack, trained: dict[str, object]
) -> None:
    # Traffic of every kind: a personalised list, an unknown user's fallback, a cache hit, an
    # invalid batch, a click on a recommended item, and one drift check.
    for _ in range(2):
        served = httpx.get(
            f"{stack.gateway}/v1/users/a1/recommendations", headers=client_headers()
        ).json()
    click = {
        "user_id": "a1",
        "item_id": served["items"][0]["item_id"],
        "type": "click",
        "recommendation_id": served["recommendation_id"],
    }
    httpx.post(f"{stack.gateway}/v1/events", json={"events": [click]}, headers=client_headers())
    wait_for_applied(stack.gateway)
    httpx.get(f"{stack.gateway}/v1/users/stranger/recommendations", headers=client_headers())
    httpx.post(f"{stack.gateway}/v1/events", json={"events": [{}]}, headers=client_headers())
    check = httpx.post(f"{stack.gateway}/v1/drift/check", headers=admin_headers(), timeout=10)
    assert check.status_code == 202, check.text
    assert wait_for_task(stack.gateway, check.json()["task_id"])["state"] == "SUCCESS"

    gateway = scrape(stack, "gateway")
    assert value(gateway, "http_requests_total", route="/v1/users/{user_id}/recommendations") >= 3
    assert value(gateway, "http_request_duration_seconds_count") > 0
    assert value(gateway, "recsys_cache_requests_total", result="hit") >= 1
    assert value(gateway, "recsys_cache_requests_total", result="miss") >= 1
    assert value(gateway, "recsys_recommender_batch_lists_count") >= 2
    assert value(gateway, "recsys_events_received_total", outcome="accepted") > 0
    assert value(gateway, "recsys_events_received_total", outcome="rejected") >= 1
    assert value(gateway, "recsys_event_rejects_total") >= 1

    served = 0.0
    for replica in ("recommender1", "recommender2"):
        recommender = scrape(stack, replica)
        assert value(recommender, "recsys_model_version") == trained["version"]
        assert value(recommender, "recsys_model_created_timestamp_seconds") > 0
        served += value(recommender, "recsys_recommendations_total", strategy="personalized")
        served += value(recommender, "recsys_recommendations_total", reason="unknown_user")
    assert served >= 2

    feature_store = scrape(stack, "feature-store")
    assert value(feature_store, "recsys_events_applied_total") > 0
    assert value(feature_store, "recsys_consumer_last_batch_timestamp_seconds") > 0
    assert "recsys_stream_lag_events" in feature_store
    assert value(feature_store, "recsys_snapshots_total", outcome="passed") >= 1

    worker = scrape(stack, "worker")
    assert value(worker, "recsys_training_runs_total", outcome="published") >= 1
    assert value(worker, "recsys_training_duration_seconds_count") >= 1
    assert value(worker, "recsys_celery_tasks_total", task="recsys.train_model") >= 1
    assert "recsys_drift_unknown_share" in worker
    assert 'recsys_celery_queue_length{queue="training"}' in worker
    assert value(worker, "recsys_drift_online_hit_rate", version=str(trained["version"])) > 0
    for text in (gateway, feature_store, recommender):
        assert "# HELP redis_errors_total" in text
