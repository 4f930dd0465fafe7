"""The model registry and task routes on a real Redis, with versions recorded through
``recsys_shared.registry.ModelRegistry`` as the retraining-worker does."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import redis

from recsys_shared import keys
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo, ModelStatus
from recsys_shared.testing import assert_problem, model_info, view_batch


def _info(version: int, status: ModelStatus, **fields: Any) -> ModelInfo:
    fields.setdefault("metrics", {"ndcg_at_10": 0.1 * version})
    return model_info(version, status, **fields)


def _run(gateway: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine function on the app's event loop (where its Redis client lives)."""
    return gateway.client.portal.call(functools.partial(function, *args, **kwargs))


@pytest.fixture
def registry(gateway: Any) -> ModelRegistry:
    registry: ModelRegistry = gateway.state.registry
    return registry


@pytest.fixture
def versions(gateway: Any, registry: ModelRegistry) -> None:
    """1: an older good candidate; 2: active; 3: rejected by the gate; 4: artifact deleted."""
    _run(gateway, registry.record, _info(1, ModelStatus.CANDIDATE))
    _run(gateway, registry.publish, _info(2, ModelStatus.CANDIDATE), reason="first")
    rejected = _info(
        3, ModelStatus.REJECTED, status_reason="ndcg below baseline", artifact_url=None
    )
    _run(gateway, registry.record, rejected)
    _run(gateway, registry.record, _info(4, ModelStatus.CANDIDATE))
    _run(gateway, registry.drop_artifact, 4)


def test_no_active_model_is_a_404(gateway: Any, admin_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/models/active", headers=admin_headers)

    assert_problem(response, 404, "not-found")


@pytest.mark.usefixtures("versions")
def test_the_registry_is_listed_newest_first(gateway: Any, admin_headers: dict[str, str]) -> None:
    listed = gateway.client.get("/v1/models", headers=admin_headers)
    active = gateway.client.get("/v1/models/active", headers=admin_headers)

    assert listed.status_code == 200
    models = [ModelInfo.model_validate(entry) for entry in listed.json()]
    assert [(model.version, model.status) for model in models] == [
        (4, ModelStatus.CANDIDATE),
        (3, ModelStatus.REJECTED),
        (2, ModelStatus.ACTIVE),
        (1, ModelStatus.CANDIDATE),
    ]
    assert active.status_code == 200
    assert ModelInfo.model_validate(active.json()).version == 2


@pytest.mark.usefixtures("versions")
def test_activating_an_older_version_rolls_back(
    gateway: Any, registry: ModelRegistry, store: redis.Redis, admin_headers: dict[str, str]
) -> None:
    with store.pubsub() as pubsub:
        pubsub.subscribe(keys.MODEL_EVENTS_CHANNEL)
        assert pubsub.get_message(timeout=1)["type"] == "subscribe"

        response = gateway.client.post("/v1/models/1/activate", headers=admin_headers)

        assert response.status_code == 200, response.text
        published = pubsub.get_message(timeout=1)
    body = ModelInfo.model_validate(response.json())
    assert body.version == 1
    assert body.status is ModelStatus.ACTIVE
    assert body.activated_at is not None
    assert _run(gateway, registry.active_version) == 1
    assert _run(gateway, registry.get, 2).status is ModelStatus.RETIRED
    assert published is not None
    assert published["data"] == "1"
    active = gateway.client.get("/v1/models/active", headers=admin_headers)
    assert active.json()["version"] == 1


@pytest.fixture
def refused_activation(
    gateway: Any, registry: ModelRegistry, admin_headers: dict[str, str], versions: None
) -> Callable[[int, int], dict[str, Any]]:
    """Activate a version of ``versions`` and check it is refused with a problem of the given
    status, version 2 still active; the problem."""

    def refused(version: int, status: int) -> dict[str, Any]:
        response = gateway.client.post(f"/v1/models/{version}/activate", headers=admin_headers)
        problem = assert_problem(response, status)
        assert _run(gateway, registry.active_version) == 2
        return problem

    return refused


def test_a_rejected_version_cannot_be_activated(
    refused_activation: Callable[[int, int], dict[str, Any]],
) -> None:
    problem = refused_activation(3, 409)
    assert problem["type"] == "urn:recsys:problem:conflict"
    assert "ndcg below baseline" in problem["detail"]


def test_a_version_without_artifact_cannot_be_activated(
    gateway: Any,
    registry: ModelRegistry,
    refused_activation: Callable[[int, int], dict[str, Any]],
) -> None:
    refused_activation(4, 409)
    assert _run(gateway, registry.get, 4).status is ModelStatus.CANDIDATE


def test_an_unknown_version_cannot_be_activated(
    refused_activation: Callable[[int, int], dict[str, Any]],
) -> None:
    problem = refused_activation(99, 404)
    assert problem["type"] == "urn:recsys:problem:unknown-model-version"


@pytest.mark.parametrize("version", ["0", "-1", "one", str(2**53 + 1), "0_3", "1.0", "+1"])
def test_activate_validates_the_version(
    gateway: Any, admin_headers: dict[str, str], version: str
) -> None:
    response = gateway.client.post(f"/v1/models/{version}/activate", headers=admin_headers)

    assert_problem(response, 422)


def test_an_unknown_task_is_a_404(gateway: Any, admin_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/tasks/unknown", headers=admin_headers)

    assert_problem(response, 404, "unknown-task")


def test_an_invalid_task_id_is_a_422(gateway: Any, admin_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/tasks/" + "a" * 65, headers=admin_headers)

    assert response.status_code == 422


def test_pipeline_status_counts_ingested_events(
    gateway: Any, client_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    events = view_batch("e", "u", "i", 3)
    gateway.client.post("/v1/events", json={"events": events}, headers=client_headers)
    gateway.client.post("/v1/events", json={"events": events[:1]}, headers=client_headers)

    response = gateway.client.get("/v1/pipeline", headers=admin_headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["counters"]["accepted"] == 3
    assert body["counters"]["duplicates"] == 1
    assert body["stream_length"] == 3
    assert body["last_snapshot"] is None
