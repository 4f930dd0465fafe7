"""The HTTP API through the real app: lifespan, model watcher, problem details.

The app runs in the test's own event loop (``httpx.ASGITransport`` around the lifespan), not
in Starlette's ``TestClient`` thread: glide reads every client's replies on the event loop
that made its first client, so a test that set Redis up with its own client and then blocked
that loop on a ``TestClient`` call would wait forever for the app's replies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from recommender.config import Settings
from recommender.main import create_app
from recsys_shared import keys
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.processes import RedisServer
from recsys_shared.redis import connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo, Recommendations
from recsys_shared.testing import assert_problem, eventually

#: As the features fixture writes them (conftest.PARTITIONS; test modules cannot import it).
PARTITIONS = keys.Partitions(3)


pytestmark = pytest.mark.usefixtures("restore_logging")  # every test starts the app


@asynccontextmanager
async def _app_client(redis_url: str, store: ArtifactStore) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (its lifespan run), and a client sending it requests."""
    settings = Settings(
        redis_url=redis_url,
        artifact_url=store.base_url,
        model_poll_seconds=0.2,
        log_json=False,
        event_partitions=PARTITIONS.count,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            # What a server does with the lifespan's state: a copy in every request's scope.
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://recommender") as client:
            yield client


@pytest.fixture
async def api(
    redis_url: str, artifact_store: ArtifactStore, model_v1: ModelInfo, features: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with _app_client(redis_url, artifact_store) as client:
        yield client


async def test_healthz(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_ready_with_the_model_loaded(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", "model": "ok"}}


async def test_model_reports_the_serving_version(api: httpx.AsyncClient) -> None:
    response = await api.get("/model")
    assert response.status_code == 200
    assert response.json() == {
        "serving_version": 1,
        "active_version": 1,
        "last_error": None,
        "variant_versions": [],
        "memory_bytes": response.json()["memory_bytes"],
    }
    assert response.json()["memory_bytes"] > 0


async def test_user_recommendations(api: httpx.AsyncClient, clusters: Any) -> None:
    response = await api.get("/users/a0/recommendations", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "personalized"
    assert body["model_version"] == 1
    assert body["user_id"] == "a0"
    served = [item["item_id"] for item in body["items"]]
    assert len(served) == 4
    assert set(served) <= clusters.cluster_items("a") - set(clusters.history["a0"])
    assert body["recommendation_id"]


async def test_user_recommendations_with_a_category_and_offset(
    api: httpx.AsyncClient, clusters: Any
) -> None:
    response = await api.get(
        "/users/a0/recommendations", params={"k": 3, "offset": 2, "category": "beta"}
    )
    assert response.status_code == 200
    served = [item["item_id"] for item in response.json()["items"]]
    assert len(served) == 3
    assert set(served) <= clusters.cluster_items("b")
    first = (await api.get("/users/a0/recommendations", params={"k": 5, "category": "beta"})).json()
    assert [item["item_id"] for item in first["items"]][2:] == served


async def test_unknown_user_gets_popular(api: httpx.AsyncClient) -> None:
    body = (await api.get("/users/nobody/recommendations")).json()
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
        # Inner spaces are allowed ("Science Fiction"), surrounding whitespace is not.
        ({"category": " padded"}, "category"),
        ({"category": "tab\there"}, "category"),
    ],
)
async def test_invalid_query_is_a_422_problem(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await api.get("/users/a0/recommendations", params=params)
    assert_problem(response, 422)
    problem = response.json()
    assert problem["status"] == 422
    assert problem["type"] == "urn:recsys:problem:invalid-input"
    assert any(field in error["field"] for error in problem["errors"])
    same = await api.get("/items/A0/similar", params=params)
    assert_problem(same, 422)


async def test_a_batch_is_answered_as_ndjson_in_the_order_asked(api: httpx.AsyncClient) -> None:
    asked = [
        {"user_id": "b1", "k": 2},
        {"user_id": "nobody", "k": 3, "exclude_seen": False},
        {"user_id": "a0", "k": 4, "offset": 1, "category": "alpha"},
    ]

    response = await api.post("/batch/recommendations", json={"requests": asked})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    lists = [Recommendations.model_validate_json(line) for line in response.text.split("\n")]
    assert [(body.user_id, body.strategy.value, len(body.items)) for body in lists] == [
        ("b1", "personalized", 2),
        ("nobody", "popular", 3),
        ("a0", "personalized", 4),
    ]
    alone = (
        await api.get(
            "/users/a0/recommendations", params={"k": 4, "offset": 1, "category": "alpha"}
        )
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
async def test_an_invalid_batch_is_a_422_problem_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/batch/recommendations", json=body)

    assert_problem(response, 422)
    assert field in [error["field"] for error in response.json()["errors"]]


async def test_a_batch_that_is_not_json_is_a_422_problem(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/batch/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert_problem(response, 422)
    # Parsed by the fast lane with pydantic, whose decode error names line and column.
    [error] = response.json()["errors"]
    assert (error["field"], error["type"]) == ("body", "json_invalid")
    assert error["message"].startswith("is not valid JSON: ")
    assert "line 1 column 2" in error["message"]
    assert "character" not in error["message"]


async def test_similar_items(api: httpx.AsyncClient, clusters: Any) -> None:
    response = await api.get("/items/B1/similar", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "similar"
    assert body["item_id"] == "B1"
    served = [item["item_id"] for item in body["items"]]
    assert "B1" not in served
    assert set(served) <= clusters.cluster_items("b")


async def test_similar_of_an_unknown_item_is_a_404_problem(api: httpx.AsyncClient) -> None:
    response = await api.get("/items/no-such-item/similar")
    assert_problem(response, 404)
    problem = response.json()
    assert problem["status"] == 404
    assert problem["type"] == "urn:recsys:problem:unknown-item"
    assert "no-such-item" in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]


async def test_similar_of_an_item_the_model_has_not_learned(
    api: httpx.AsyncClient, clusters: Any
) -> None:
    body = (await api.get(f"/items/{clusters.new_item}/similar")).json()
    assert body["strategy"] == "popular"
    assert body["fallback_reason"] == "item_not_in_model"


async def test_without_a_model_the_app_serves_popular_items(
    redis_url: str, artifact_store: ArtifactStore, features: Any
) -> None:
    async with _app_client(redis_url, artifact_store) as client:
        assert (await client.get("/model")).json() == {
            "serving_version": None,
            "active_version": None,
            "last_error": None,
            "variant_versions": [],
            "memory_bytes": 0,
        }
        assert (await client.get("/readyz")).status_code == 200
        body = (await client.get("/users/a0/recommendations")).json()
        assert body["strategy"] == "popular"
        assert body["fallback_reason"] == "no_model"


async def test_the_watcher_loads_a_newly_published_version(
    redis_url: str,
    artifact_store: ArtifactStore,
    model_v1: ModelInfo,
    write_model: Any,
    registry: Any,
    features: Any,
) -> None:
    async with _app_client(redis_url, artifact_store) as client:
        assert (await client.get("/model")).json()["serving_version"] == 1
        await registry.publish(write_model(2), reason="test")

        async def serving_v2() -> bool:
            return bool((await client.get("/model")).json()["serving_version"] == 2)

        await eventually(serving_v2)
        body = (await client.get("/users/a1/recommendations")).json()
        assert body["model_version"] == 2


async def test_without_redis_it_is_not_ready_and_a_list_is_a_retryable_503(
    own_redis: RedisServer, artifact_store: ArtifactStore, write_model: Any
) -> None:
    """Redis stopped under a serving replica: readiness fails and a list that needs the user's
    history is a 503 with Retry-After (never another 5xx); both recover when Redis is back."""
    client = await connect(own_redis.url)
    await ModelRegistry(client).publish(write_model(1), reason="test")
    await client.aclose()
    async with _app_client(own_redis.url, artifact_store) as api:
        await eventually(lambda: _status(api, "/readyz", 200))

        own_redis.stop()

        assert (await api.get("/readyz")).status_code == 503
        response = await api.get("/users/a0/recommendations")
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1
        own_redis.start()
        await eventually(lambda: _status(api, "/users/a0/recommendations", 200), within=15)
        assert (await api.get("/readyz")).status_code == 200


async def _status(api: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await api.get(path)).status_code == status
