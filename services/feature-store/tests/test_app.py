"""The feature-store app end to end in-process: routes, readiness and the running consumer."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.exceptions import StarletteDeprecationWarning

from feature_store.config import Settings
from feature_store.deps import FeatureStoreState
from feature_store.main import create_app
from recsys_shared import keys
from recsys_shared.artifacts import MANIFEST
from recsys_shared.processes import RedisServer
from recsys_shared.schemas import SnapshotInfo, StoredEvent
from recsys_shared.web.state import stored_state

# Starlette 1.x warns (an error here) that its TestClient prefers httpx2 over the httpx this
# workspace pins; the client behaves the same on both.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

P0 = keys.Partitions(1).all[0]


@pytest.fixture
def app_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        artifact_url=f"file://{tmp_path / 'artifacts'}",
        consumer_name="t",
        consumer_block_ms=50,
        popularity_merge_seconds=0.2,  # as the test stack: popular lists within the wait
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


def test_the_reserved_item_id_is_a_422_not_an_error(client, sync_redis):
    response = client.put("/items/popular", json={"title": "Popular"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "path.item_id"
    assert sync_redis.exists(keys.item("popular")) == 0


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
    sync_redis.xadd(P0.events, {"e": event_json("u1", "i1", "e1")})
    wait_until(lambda: sync_redis.exists(P0.user_items("u1")))

    response = client.delete("/users/u1")
    assert response.status_code == 204
    assert response.content == b""
    assert sync_redis.exists(*P0.user_keys("u1")) == 0
    assert sync_redis.zscore(P0.users, "u1") is None
    assert sync_redis.hexists(P0.erased, keys.user_digest("u1"))
    assert client.delete("/users/u1").status_code == 204  # idempotent


@pytest.mark.parametrize(("user_id", "path"), [(".", "%2E"), ("..", "%2E%2E")])
def test_a_user_named_by_a_dot_segment_is_erased_when_sent_encoded(
    client, sync_redis, user_id, path
):
    # The gateway sends these ids encoded (gateway.clients.segment): '/users/..' would be '/'.
    sync_redis.xadd(P0.events, {"e": event_json(user_id, "i1", f"e-{path}")})
    wait_until(lambda: sync_redis.exists(P0.user_items(user_id)))

    assert client.delete(f"/users/{path}").status_code == 204
    assert sync_redis.exists(*P0.user_keys(user_id)) == 0
    assert sync_redis.hexists(P0.erased, keys.user_digest(user_id))


def test_delete_user_with_an_invalid_id_is_a_422_problem(client):
    response = client.delete("/users/" + "x" * 200)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_snapshots_latest_before_and_after_one_is_taken(client, app_settings, sync_redis):
    response = client.get("/snapshots/latest")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")

    sync_redis.xadd(P0.events, {"e": event_json("u1", "i1", "e1")})
    wait_until(lambda: sync_redis.exists(P0.user_items("u1")))

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
        sync_redis.xadd(P0.events, {"e": event_json("u1", item, f"e{number}")})
    sync_redis.xadd(P0.events, {"e": "garbage"})

    def caught_up() -> bool:
        return (
            sync_redis.hget(P0.user_meta("u1"), "epoch") == "3"
            and sync_redis.xlen(P0.dead_letters) == 1
        )

    wait_until(caught_up)
    items = {item: float(w) for item, w in sync_redis.hgetall(P0.user_items("u1")).items()}
    assert items == {"i1": 8.0, "i2": 4.0}
    assert sync_redis.xpending(P0.events, keys.EVENTS_GROUP)["pending"] == 0
    [(_, dead)] = sync_redis.xrange(P0.dead_letters)
    assert dead["entry"] == "garbage"
    assert dead["reason"] == "invalid_event"
    assert sync_redis.hget(P0.heartbeats, "t") is not None
    # The merger sums the partitions' popularity for serving, in the background.
    wait_until(lambda: sync_redis.zcard(keys.POPULAR) == 2)
    # And what was applied is trimmed from the stream.
    wait_until(lambda: sync_redis.xlen(P0.events) == 0)


# ── PATCH /items/{item_id} ────────────────────────────────────────────────────────────────
def test_patch_changes_only_the_fields_given(client, sync_redis, stored_item):
    client.put("/items/i1", json={"title": "Heat", "categories": ["Crime"]}).raise_for_status()
    version = int(sync_redis.get(keys.CATALOGUE_VERSION))

    response = client.patch("/items/i1", json={"available": False})

    assert response.status_code == 200
    assert response.json() == {"stored": 1}
    assert stored_item("i1") == ("Heat", ["Crime"], "0")
    assert sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")
    assert int(sync_redis.get(keys.CATALOGUE_VERSION)) == version + 1

    client.patch("/items/i1", json={"title": "Heat (1995)", "available": True}).raise_for_status()
    item = sync_redis.hgetall(keys.item("i1"))
    assert (item["title"], item["available"]) == ("Heat (1995)", "1")
    assert not sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "i1")


def test_patch_categories_with_spaces_and_punctuation(client, sync_redis):
    client.put("/items/i1", json={"title": "Alien", "categories": ["Horror"]}).raise_for_status()
    categories = ["Science Fiction", "Home & Garden: Tools", "(no genres listed)", "Sci-Fi/Fantasy"]

    response = client.patch("/items/i1", json={"categories": categories})

    assert response.status_code == 200
    assert json.loads(sync_redis.hget(keys.item("i1"), "categories")) == sorted(categories)
    assert sync_redis.hget(keys.item("i1"), "title") == "Alien"
    for category in categories:
        assert sync_redis.smembers(keys.category_items(category)) == {"i1"}
    assert sync_redis.smembers(keys.category_items("Horror")) == set()


def test_patch_of_an_unknown_item_is_a_404_problem(client, sync_redis):
    response = client.patch("/items/nope", json={"available": False})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "urn:recsys:problem:unknown-item"
    assert "nope" in response.json()["detail"]
    assert not sync_redis.exists(keys.item("nope"))
    assert not sync_redis.sismember(keys.UNAVAILABLE_ITEMS, "nope")


@pytest.mark.parametrize(
    "body",
    [
        {},  # changes nothing
        {"available": "no"},
        {"title": ""},
        {"categories": [" Leading space"]},
        {"categories": ["Tab\tinside"]},
        {"categories": ["x" * 65]},
        {"price": 3},
    ],
)
def test_invalid_patch_is_a_422_problem_and_changes_nothing(client, sync_redis, body):
    client.put("/items/i1", json={"title": "Heat", "categories": ["Crime"]}).raise_for_status()
    before = sync_redis.hgetall(keys.item("i1"))

    response = client.patch("/items/i1", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"]
    assert sync_redis.hgetall(keys.item("i1")) == before


# ── dead letters ──────────────────────────────────────────────────────────────────────────
def test_dead_letters_are_listed_by_reason_and_replayed(client, sync_redis):
    sync_redis.xadd(P0.events, {"e": "garbage"})
    sync_redis.xadd(P0.events, {"e": json.dumps({"user_id": "u1"})})
    wait_until(lambda: sync_redis.xlen(P0.dead_letters) == 2)

    listed = client.get("/dead-letters", params={"reason": "invalid_event", "limit": 1})
    assert listed.status_code == 200
    body = listed.json()
    assert (body["total"], body["by_reason"]) == (2, {"invalid_event": 2})
    [newest] = body["entries"]
    assert (newest["partition"], newest["reason"]) == (0, "invalid_event")
    assert "Field required" in newest["detail"]
    assert client.get("/dead-letters", params={"reason": "other"}).json()["entries"] == []

    before = {letter_id for letter_id, _ in sync_redis.xrange(P0.dead_letters)}
    replayed = client.post("/dead-letters/replay", json={"reason": "invalid_event"})
    assert replayed.status_code == 200
    assert replayed.json() == {"replayed": 2, "skipped": 0}

    # Still invalid: taken out, sent through the stream again, and dead-lettered anew (new
    # ids), not left where they were.
    def dead_again() -> set[str]:
        return {letter_id for letter_id, _ in sync_redis.xrange(P0.dead_letters)}

    wait_until(lambda: len(dead_again()) == 2 and not dead_again() & before)
    entries = {fields["entry"] for _, fields in sync_redis.xrange(P0.dead_letters)}
    assert "garbage" in entries


@pytest.mark.parametrize(
    ("method", "path", "options"),
    [
        ("GET", "/dead-letters", {"params": {"limit": 0}}),
        ("GET", "/dead-letters", {"params": {"reason": ""}}),
        ("POST", "/dead-letters/replay", {"json": {"limit": 0}}),
        ("POST", "/dead-letters/replay", {"json": {"everything": True}}),
    ],
)
def test_invalid_dead_letter_requests_are_422_problems(client, method, path, options):
    response = client.request(method, path, **options)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


# ── /healthz: restart a stuck replica, not every replica during a Redis outage ────────────
@pytest.fixture
def own_client(
    own_redis: RedisServer, tmp_path: Path, restore_logging: None
) -> Iterator[TestClient]:
    settings = Settings(
        redis_url=own_redis.url,
        artifact_url=f"file://{tmp_path / 'artifacts'}",
        consumer_name="t",
        consumer_block_ms=50,
        consumer_stale_seconds=1.0,
        redis_timeout_seconds=0.5,
        log_json=False,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def health(client: TestClient) -> tuple[int, dict[str, str]]:
    response = client.get("/healthz")
    return response.status_code, response.json()


def test_healthz_fails_when_the_consumer_has_stopped(own_client):
    wait_until(lambda: health(own_client)[0] == 200)
    task = stored_state(own_client.app_state, FeatureStoreState).consumer_task

    own_client.portal.call(task.cancel)

    wait_until(lambda: health(own_client) == (503, {"status": "failing", "detail": "stopped"}))
    assert own_client.get("/readyz").json()["checks"]["consumer"] == "stopped"


def test_healthz_fails_when_the_consumer_is_stuck_while_redis_answers_but_not_in_an_outage(
    own_client, own_redis
):
    inspector = redis.Redis.from_url(own_redis.url, decode_responses=True)
    wait_until(lambda: health(own_client)[0] == 200)
    time.sleep(1.5)  # longer than consumer_stale_seconds: reading, so still healthy
    assert health(own_client)[0] == 200

    # The stream is not a stream any more (a broken deployment): every read fails while
    # Redis answers PING. That replica must be restarted.
    inspector.set(P0.events, "not a stream")
    wait_until(lambda: health(own_client)[0] == 503, timeout=5)
    status, body = health(own_client)
    assert status == 503
    assert body["detail"].startswith("stale: no completed read for")

    # Redis itself down: every replica is in the same state; restarting them would not help.
    inspector.close()
    own_redis.stop()
    wait_until(lambda: health(own_client)[0] == 200, timeout=5)
    assert health(own_client) == (200, {"status": "ok"})
    assert own_client.get("/readyz").status_code == 503

    # Back, still broken: stuck again; repaired: reading, healthy again.
    own_redis.start()
    inspector = redis.Redis.from_url(own_redis.url, decode_responses=True)
    wait_until(lambda: health(own_client)[0] == 503, timeout=5)
    inspector.delete(P0.events)
    wait_until(lambda: health(own_client)[0] == 200, timeout=10)
    inspector.xadd(P0.events, {"e": event_json("u1", "i1", "e1")})
    wait_until(lambda: inspector.exists(P0.user_items("u1")) == 1, timeout=10)
    inspector.close()
