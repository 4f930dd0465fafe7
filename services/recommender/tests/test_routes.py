"""The HTTP API through the real app: lifespan, model watcher, problem details."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from recommender.config import Settings
from recommender.main import create_app
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.schemas import ModelInfo, Recommendations

# Starlette 1.x prefers the httpx2 package for its TestClient and warns (an error here) when it
# falls back to httpx, which is what this workspace pins. The client works the same on both.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The app's lifespan reconfigures the root logger; put pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _app_client(redis_url: str, store: ArtifactStore) -> TestClient:
    settings = Settings(
        redis_url=redis_url, artifact_url=store.base_url, model_poll_seconds=0.2, log_json=False
    )
    return TestClient(create_app(settings))


@pytest.fixture
def api(
    redis_url: str, artifact_store: ArtifactStore, model_v1: ModelInfo, features: Any
) -> Iterator[TestClient]:
    with _app_client(redis_url, artifact_store) as client:
        yield client


def _wait_for(condition: Any, *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_healthz(api: TestClient) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


def test_ready_with_the_model_loaded(api: TestClient) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", "model": "ok"}}


def test_model_reports_the_serving_version(api: TestClient) -> None:
    response = api.get("/model")
    assert response.status_code == 200
    assert response.json() == {"serving_version": 1, "active_version": 1, "last_error": None}


def test_user_recommendations(api: TestClient, clusters: Any) -> None:
    response = api.get("/users/a0/recommendations", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "personalized"
    assert body["model_version"] == 1
    assert body["user_id"] == "a0"
    served = [item["item_id"] for item in body["items"]]
    assert len(served) == 4
    assert set(served) <= clusters.cluster_items("a") - set(clusters.history["a0"])
    assert body["recommendation_id"]


def test_user_recommendations_with_a_category_and_offset(api: TestClient, clusters: Any) -> None:
    response = api.get(
        "/users/a0/recommendations", params={"k": 3, "offset": 2, "category": "beta"}
    )
    assert response.status_code == 200
    served = [item["item_id"] for item in response.json()["items"]]
    assert len(served) == 3
    assert set(served) <= clusters.cluster_items("b")
    first = api.get("/users/a0/recommendations", params={"k": 5, "category": "beta"}).json()
    assert [item["item_id"] for item in first["items"]][2:] == served


def test_unknown_user_gets_popular(api: TestClient) -> None:
    body = api.get("/users/nobody/recommendations").json()
    assert body["strategy"] == "popular"
    assert body["fallback_reason"] == "unknown_user"
    assert body["model_version"] is None
    assert len(body["items"]) == 10


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"offset": -1}, "offset"),
        ({"offset": 1001}, "offset"),
        ({"category": "has space"}, "category"),
    ],
)
def test_invalid_query_is_a_422_problem(
    api: TestClient, params: dict[str, Any], field: str
) -> None:
    response = api.get("/users/a0/recommendations", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"] == "urn:recsys:problem:invalid-input"
    assert any(field in error["field"] for error in problem["errors"])
    same = api.get("/items/A0/similar", params=params)
    assert same.status_code == 422
    assert same.headers["content-type"].startswith(PROBLEM)


def test_a_batch_is_answered_as_ndjson_in_the_order_asked(api: TestClient) -> None:
    asked = [
        {"user_id": "b1", "k": 2},
        {"user_id": "nobody", "k": 3, "exclude_seen": False},
        {"user_id": "a0", "k": 4, "offset": 1, "category": "alpha"},
    ]

    response = api.post("/batch/recommendations", json={"requests": asked})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    lists = [Recommendations.model_validate_json(line) for line in response.text.split("\n")]
    assert [(body.user_id, body.strategy.value, len(body.items)) for body in lists] == [
        ("b1", "personalized", 2),
        ("nobody", "popular", 3),
        ("a0", "personalized", 4),
    ]
    alone = api.get(
        "/users/a0/recommendations", params={"k": 4, "offset": 1, "category": "alpha"}
    ).json()
    assert [item.item_id for item in lists[2].items] == [item["item_id"] for item in alone["items"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"requests": []}, "requests"),
        ({"requests": [{"user_id": "a0"}] * 65}, "requests"),
        ({"requests": [{"user_id": "a0"}, {"user_id": ""}]}, "requests[1].user_id"),
        ({"requests": [{"user_id": "a0", "k": 0}]}, "requests[0].k"),
        ({"requests": [{"user_id": "a0", "sort": "x"}]}, "requests[0].sort"),
        ({}, "requests"),
    ],
)
def test_an_invalid_batch_is_a_422_problem_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post("/batch/recommendations", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    assert field in [error["field"] for error in response.json()["errors"]]


def test_a_batch_that_is_not_json_is_a_422_problem(api: TestClient) -> None:
    response = api.post(
        "/batch/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)


def test_similar_items(api: TestClient, clusters: Any) -> None:
    response = api.get("/items/B1/similar", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "similar"
    assert body["item_id"] == "B1"
    served = [item["item_id"] for item in body["items"]]
    assert "B1" not in served
    assert set(served) <= clusters.cluster_items("b")


def test_similar_of_an_unknown_item_is_a_404_problem(api: TestClient) -> None:
    response = api.get("/items/no-such-item/similar")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == 404
    assert problem["type"] == "urn:recsys:problem:unknown-item"
    assert "no-such-item" in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]


def test_similar_of_an_item_the_model_has_not_learned(api: TestClient, clusters: Any) -> None:
    body = api.get(f"/items/{clusters.new_item}/similar").json()
    assert body["strategy"] == "popular"
    assert body["fallback_reason"] == "item_not_in_model"


def test_without_a_model_the_app_serves_popular_items(
    redis_url: str, artifact_store: ArtifactStore, features: Any
) -> None:
    with _app_client(redis_url, artifact_store) as client:
        assert client.get("/model").json() == {
            "serving_version": None,
            "active_version": None,
            "last_error": None,
        }
        assert client.get("/readyz").status_code == 200
        body = client.get("/users/a0/recommendations").json()
        assert body["strategy"] == "popular"
        assert body["fallback_reason"] == "no_model"


async def test_the_watcher_loads_a_newly_published_version(
    redis_url: str,
    artifact_store: ArtifactStore,
    model_v1: ModelInfo,
    write_model: Any,
    registry: Any,
) -> None:
    with _app_client(redis_url, artifact_store) as client:
        assert client.get("/model").json()["serving_version"] == 1
        await registry.publish(write_model(2), reason="test")
        _wait_for(lambda: client.get("/model").json()["serving_version"] == 2)
        body = client.get("/users/a1/recommendations").json()
        assert body["model_version"] == 2
