"""The feature-store app end to end in-process: routes, readiness and the running consumer."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from feature_store.config import Settings
from feature_store.main import create_app
from recsys_shared import keys
from recsys_shared.artifacts import MANIFEST
from recsys_shared.schemas import SnapshotInfo, StoredEvent

# Starlette 1.x warns (an error here) that its TestClient prefers httpx2 over the httpx this
# workspace pins; the client behaves the same on both.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture
def app_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        artifact_url=f"file://{tmp_path / 'artifacts'}",
        consumer_name="t",
        consumer_block_ms=50,
        log_json=False,
    )


@pytest.fixture
def client(app_settings: Settings, restore_logging: None) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def wait_until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.02)


def event_json(user: str, item: str, event_id: str, event_type: str = "like") -> str:
    return StoredEvent(
        event_id=event_id,
        user_id=user,
        item_id=item,
        type=event_type,
        ts=time.time() - 60,
        received_at=time.time(),
    ).model_dump_json(exclude_none=True)


def test_put_items_in_bulk_and_one_by_one(client, sync_redis):
    response = client.put(
        "/items",
        json={
            "items": [
                {"item_id": "i1", "title": "One", "categories": ["drama"]},
                {"item_id": "i2", "title": "Two", "available": False},
            ]
        },
    )
    assert response.status_code == 200
    assert response.json() == {"stored": 2}

    response = client.put("/items/i3", json={"title": "Three", "categories": ["comedy", "drama"]})
    assert response.status_code == 200
    assert response.json() == {"stored": 1}

    assert sync_redis.smembers(keys.ITEMS) == {"i1", "i2", "i3"}
    assert sync_redis.hget(keys.item("i1"), "title") == "One"
    assert json.loads(sync_redis.hget(keys.item("i3"), "categories")) == ["comedy", "drama"]
    assert sync_redis.smembers(keys.category_items("drama")) == {"i1", "i3"}
    assert sync_redis.smembers(keys.UNAVAILABLE_ITEMS) == {"i2"}
    assert int(sync_redis.get(keys.CATALOGUE_VERSION)) == 3


def test_invalid_item_is_refused_with_a_problem(client, sync_redis):
    response = client.put("/items/i1", json={"title": "", "unknown": 1})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert sync_redis.exists(keys.item("i1")) == 0


def test_delete_item(client, sync_redis):
    client.put("/items/i1", json={"title": "One"}).raise_for_status()

    response = client.delete("/items/i1")
    assert response.status_code == 204
    assert sync_redis.exists(keys.item("i1")) == 0
    assert sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")


def test_delete_unknown_item_is_a_404_problem(client):
    response = client.delete("/items/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 404
    assert body["type"] == "urn:recsys:problem:unknown-item"
    assert "nope" in body["detail"]


def test_delete_user_erases_the_history(client, sync_redis):
    sync_redis.xadd(keys.EVENTS_STREAM, {"e": event_json("u1", "i1", "e1")})
    wait_until(lambda: sync_redis.exists(keys.user_items("u1")))

    response = client.delete("/users/u1")
    assert response.status_code == 204
    assert response.content == b""
    assert sync_redis.exists(keys.user_items("u1"), keys.user_times("u1")) == 0
    assert not sync_redis.sismember(keys.USERS, "u1")
    assert client.delete("/users/u1").status_code == 204  # idempotent


def test_snapshots_latest_before_and_after_one_is_taken(client, app_settings, sync_redis):
    response = client.get("/snapshots/latest")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")

    sync_redis.xadd(keys.EVENTS_STREAM, {"e": event_json("u1", "i1", "e1")})
    wait_until(lambda: sync_redis.exists(keys.user_items("u1")))

    response = client.post("/snapshots")
    assert response.status_code == 200
    info = SnapshotInfo.model_validate(response.json())
    assert (info.users, info.items, info.interactions) == (1, 1, 1)
    root = Path(app_settings.artifact_url.removeprefix("file://"))
    assert (root / "snapshots" / info.snapshot_id / MANIFEST).is_file()

    latest = client.get("/snapshots/latest")
    assert latest.status_code == 200
    assert SnapshotInfo.model_validate(latest.json()) == info
    assert SnapshotInfo.model_validate(client.post("/snapshots").json()) == info


def test_readyz_reports_redis_and_the_consumer(client):
    def ready() -> bool:
        return client.get("/readyz").status_code == 200

    wait_until(ready)
    body = client.get("/readyz").json()
    assert body == {"status": "ready", "checks": {"redis": "ok", "consumer": "ok"}}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_running_consumer_applies_events_from_the_stream(client, sync_redis):
    for number, item in enumerate(("i1", "i2", "i1")):
        sync_redis.xadd(keys.EVENTS_STREAM, {"e": event_json("u1", item, f"e{number}")})
    sync_redis.xadd(keys.EVENTS_STREAM, {"e": "garbage"})

    def caught_up() -> bool:
        return (
            sync_redis.hget(keys.user_meta("u1"), "epoch") == "3"
            and sync_redis.xlen(keys.DEAD_LETTER_STREAM) == 1
        )

    wait_until(caught_up)
    items = {item: float(w) for item, w in sync_redis.hgetall(keys.user_items("u1")).items()}
    assert items == {"i1": 8.0, "i2": 4.0}
    assert sync_redis.xpending(keys.EVENTS_STREAM, keys.EVENTS_GROUP)["pending"] == 0
    [(_, dead)] = sync_redis.xrange(keys.DEAD_LETTER_STREAM)
    assert dead["entry"] == "garbage"
    assert dead["reason"].startswith("invalid_event")
    assert sync_redis.hget(keys.CONSUMER_HEARTBEATS, "t") is not None
