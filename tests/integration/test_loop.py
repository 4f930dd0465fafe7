"""The whole loop through the public API, on real processes.

events in → stream → feature-store consumer → snapshot → Celery training → registry →
recommender replicas load it → personalised recommendations out that reflect the data.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from recsys_shared.testing import (
    Stack,
    admin_headers,
    client_headers,
    taste_clusters,
)
from recsys_shared.testing.fixtures import EVERY_TIER

pytestmark = [pytest.mark.integration, EVERY_TIER]


def _get(stack: Stack, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"{stack.gateway}{path}", params=params, headers=client_headers(), timeout=10)


def _wait_personalised(stack: Stack, user: str) -> dict[str, object]:
    # Replicas pick the new version up within their poll interval; both must serve it.
    import time

    deadline = time.monotonic() + 15
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        body = _get(stack, f"/v1/users/{user}/recommendations", k=10).json()
        if body["strategy"] == "personalized":
            return body
        time.sleep(0.2)
    raise AssertionError(f"never personalised: {body}")


def test_the_model_beats_popularity_offline(trained: dict[str, object]) -> None:
    metrics, baseline = trained["metrics"], trained["baseline_metrics"]
    assert isinstance(metrics, dict)
    assert isinstance(baseline, dict)
    assert metrics["precision_at_10"] > baseline["precision_at_10"]
    assert metrics["evaluated_users"] > 0


def test_users_get_items_of_their_own_taste_cluster(
    stack: Stack, trained: dict[str, object]
) -> None:
    for user, own, other in (("a3", "A", "B"), ("b5", "B", "A")):
        body = _wait_personalised(stack, user)
        ranked = [item["item_id"] for item in body["items"]]  # type: ignore[union-attr, index]
        clusters = Counter(item_id[0] for item_id in ranked)
        assert clusters[own] >= 8, (user, ranked)
        assert clusters[other] <= 2, (user, ranked)
        assert body["model_version"] == trained["version"]
        assert body["recommendation_id"]


def test_seen_items_are_excluded_and_titles_shown(stack: Stack, trained: dict[str, object]) -> None:
    _, events = taste_clusters()
    seen = {event["item_id"] for event in events if event["user_id"] == "a3"}
    body = _wait_personalised(stack, "a3")
    items = body["items"]
    assert isinstance(items, list)
    assert not seen & {item["item_id"] for item in items}
    assert all(
        item["title"].startswith("Alpha item") for item in items if item["item_id"][0] == "A"
    )

    with_seen = _get(stack, "/v1/users/a3/recommendations", k=30, exclude_seen="false").json()
    assert seen & {item["item_id"] for item in with_seen["items"]}


def test_an_unknown_user_gets_the_popular_fallback_marked_as_such(
    stack: Stack, trained: dict[str, object]
) -> None:
    body = _get(stack, "/v1/users/nobody-knows-me/recommendations", k=5).json()
    assert body["strategy"] == "popular"
    assert body["fallback_reason"] == "unknown_user"
    assert body["model_version"] is None
    assert len(body["items"]) == 5


def test_similar_items_come_from_the_same_cluster(stack: Stack, trained: dict[str, object]) -> None:
    body = _get(stack, "/v1/items/A0/similar", k=5).json()
    assert body["strategy"] == "similar"
    ranked = [item["item_id"] for item in body["items"]]
    assert "A0" not in ranked
    assert sum(item.startswith("A") for item in ranked) >= 4, ranked


def test_popular_items_per_category(stack: Stack, trained: dict[str, object]) -> None:
    body = _get(stack, "/v1/items/popular", k=5, category="beta").json()
    assert body["strategy"] == "popular"
    assert [item["item_id"][0] for item in body["items"]] == ["B"] * 5
    assert body["items"][0]["score"] == pytest.approx(1.0)


def test_head_is_answered_wherever_get_is_by_the_real_servers(
    stack: Stack, trained: dict[str, object]
) -> None:
    for service in ("gateway", "recommender1", "feature-store"):
        assert httpx.head(f"{stack.url(service)}/healthz", timeout=5).status_code == 200, service

    listed = httpx.head(
        f"{stack.gateway}/v1/users/a3/recommendations", headers=client_headers(), timeout=10
    )
    assert (listed.status_code, listed.content) == (200, b"")
    assert int(listed.headers["content-length"]) > 0
    keyless = httpx.head(f"{stack.gateway}/v1/items/popular", timeout=10)
    assert (keyless.status_code, keyless.headers["www-authenticate"]) == (401, "APIKey")


def test_every_replica_serves_the_published_version(
    stack: Stack, trained: dict[str, object]
) -> None:
    for replica in ("recommender1", "recommender2"):
        status = httpx.get(f"{stack.url(replica)}/model", timeout=5).json()
        assert status["serving_version"] == trained["version"], (replica, status)


def test_the_registry_records_the_version_with_its_lineage(
    stack: Stack, trained: dict[str, object]
) -> None:
    active = httpx.get(f"{stack.gateway}/v1/models/active", headers=admin_headers(), timeout=5)
    assert active.status_code == 200
    info = active.json()
    assert info["version"] == trained["version"]
    assert info["status"] == "active"
    # The first training searched the recipes: the winner's recipe is the lineage, with every
    # candidate it was chosen from.
    assert info["selection"]["mode"] == "search"
    candidates = info["selection"]["candidates"]
    assert len(candidates) >= 2
    assert info["recipe"] == candidates[0]["recipe"]
    assert info["algorithm"] == info["recipe"]["algorithm"]
    assert info["selection"]["reason"]
    assert info["metrics"]["precision_at_10"] == trained["metrics"]["precision_at_10"]  # type: ignore[index]
    assert info["data"]["users"] == 80
    assert len(info["checksum"]) == 64
