"""Erasing a user from the whole system, on real processes: a real Redis (one node, or a
cluster with its broker), an ephemeral Redis, every service and a Celery worker.

A model is trained that knows the user; the user has features, idempotency markers, drift
counts, a dead letter, cached lists and served-list records; events of theirs are accepted
while the feature-store is paused and reach it only after the erasure. After
``DELETE /v1/users/{id}``: no replica personalises the user (the delay is measured against a
2 s deadline); the events in flight do not bring them back; once the consumers have caught up
and trimmed, nothing in any Redis names the user (only a digest in the tombstone); the next
snapshot and model do not hold them, the older ones are rewritten without them, and a
rollback to the version trained before the erasure does not personalise them.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.artifacts import (
    IDS_FILE,
    SNAPSHOT_FILE,
    SNAPSHOTS_FOLDER,
    ArtifactError,
    ArtifactStore,
    load_npz,
    model_folder,
    snapshot_folder,
)
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.schemas import ServedList, Strategy
from recsys_shared.testing import (
    DataTier,
    Stack,
    admin_headers,
    client_headers,
    load,
    retrain,
    taste_clusters,
    wait_for_applied,
)
from recsys_shared.testing.fixtures import EVERY_TIER
from recsys_shared.testing.inspection import Occurrence, occurrences, occurrences_in

pytestmark = [pytest.mark.integration, EVERY_TIER]

#: The user erased: a ':' in the id, as keys embed ids, and nothing else in the data
#: contains it, so any byte sequence holding it is a trace of this user.
ERASED = "erase:me-7c1e9b"
PATH = quote(ERASED, safe="")
DEADLINE_SECONDS = 2.0
IN_FLIGHT = 3


@pytest.fixture(scope="module")
def ephemeral(tier: DataTier, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The system's ephemeral Redis, a new one with each data tier."""
    server = RedisServer(tmp_path_factory.mktemp("ephemeral"), durable=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack_settings(ephemeral: RedisServer) -> dict[str, str]:
    return {"EPHEMERAL_REDIS_URL": ephemeral.url}


@dataclass
class World:
    """The running system and the test's ways of looking at it."""

    stack: Stack
    http: httpx.Client  # the gateway, and any absolute URL; keeps its connections
    ephemeral: redis.Redis  # bytes, as the inspection reads them
    inspector: Any  # the data tier, cluster-aware, text
    store: ArtifactStore
    partition: keys.Partition  # the erased user's


@pytest.fixture
def world(stack: Stack, ephemeral: RedisServer) -> Iterator[World]:
    state = World(
        stack=stack,
        http=httpx.Client(base_url=stack.gateway, timeout=30),
        ephemeral=redis.Redis.from_url(ephemeral.url),
        inspector=stack.tier.inspector(),
        store=ArtifactStore(stack.env["ARTIFACT_URL"]),
        partition=keys.Partitions(stack.tier.partitions).of(ERASED),
    )
    try:
        yield state
    finally:
        state.http.close()
        state.ephemeral.close()
        state.inspector.close()


def _events_of_the_erased_user(count: int, *, prefix: str, kind: str = "like") -> list[Any]:
    now = time.time()
    return [
        {
            "event_id": f"{prefix}{n}",
            "user_id": ERASED,
            "item_id": f"A{n}",
            "type": kind,
            "timestamp": datetime.fromtimestamp(now - 3600 - n * 86_400, UTC).isoformat(),
        }
        for n in range(count)
    ]


def _lists(world: World) -> dict[str, dict[str, Any]]:
    """The erased user's list from each recommender replica directly and through the
    gateway (on connections kept open, so that a poll costs little)."""
    path = f"/users/{PATH}/recommendations"
    bodies = {}
    for name, url in (
        ("recommender1", world.stack.url("recommender1") + path),
        ("recommender2", world.stack.url("recommender2") + path),
        ("gateway", f"{world.stack.gateway}/v1{path}"),
    ):
        response = world.http.get(url, headers=client_headers(), timeout=5)
        assert response.status_code == 200, (name, response.text)
        bodies[name] = response.json()
    return bodies


def _personalised(bodies: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, body in bodies.items() if body["strategy"] != Strategy.POPULAR]


def _in_data_tier(stack: Stack) -> list[Occurrence]:
    """Where the data tier and the broker name the erased user."""
    clients = stack.tier.primaries(decode=False)
    if stack.tier.broker_url != stack.tier.url:
        clients.append(redis.Redis.from_url(stack.tier.broker_url))
    try:
        return occurrences_in(clients, ERASED)
    finally:
        for client in clients:
            client.close()


def _holders(store: ArtifactStore, versions: list[int]) -> list[str]:
    """The snapshots and model versions whose id tables hold the erased user."""
    found = []
    for name in store.list_dirs(SNAPSHOTS_FOLDER):
        _, files = store.read_bundle(snapshot_folder(name))
        if ERASED in load_npz(files[SNAPSHOT_FILE])["user_ids"]:
            found.append(f"snapshot {name}")
    for version in versions:
        _, files = store.read_bundle(model_folder(version))
        if ERASED in load_npz(files[IDS_FILE])["user_ids"]:
            found.append(f"model v{version}")
    return found


def _rewritten(store: ArtifactStore, versions: list[int]) -> bool:
    try:
        return not _holders(store, versions)
    except ArtifactError:  # read while the task rewrote it (files first, manifest last)
        return False


def _a_model_and_every_kind_of_trace(world: World) -> dict[str, Any]:
    """Train a model that knows the user; leave features, markers, drift counts, a dead
    letter, cached lists and records of them; show that the inspection finds them."""
    items, events = taste_clusters()
    http, partition = world.http, world.partition
    events += _events_of_the_erased_user(12, prefix="history-")
    load(world.stack.gateway, items, events)
    trained = retrain(world.stack.gateway)
    wait_until(
        lambda: len(_personalised(_lists(world))) == 3,
        timeout=30,
        what="every replica personalising the user",
    )
    served = _lists(world)["gateway"]  # a cached list and a record; the click: drift hits
    click = {
        "user_id": ERASED,
        "item_id": served["items"][0]["item_id"],
        "type": "click",
        "event_id": "click-1",
        "recommendation_id": served["recommendation_id"],
    }
    http.post("/v1/events", json={"events": [click]}, headers=client_headers()).raise_for_status()
    # An entry no consumer can apply (a writer's bug): it becomes a dead letter.
    corrupt = json.dumps({"user_id": ERASED, "item_id": "A1"})
    world.inspector.xadd(partition.events, {keys.EVENT_FIELD: corrupt})
    wait_for_applied(world.stack.gateway)

    traced = {found.key for found in _in_data_tier(world.stack)}
    assert {
        partition.user_items(ERASED).encode(),
        partition.markers(ERASED).encode(),
        partition.users.encode(),
        partition.dead_letters.encode(),
    } <= traced, traced
    assert occurrences(world.ephemeral, ERASED), "no cached list or record of the user"
    held = _holders(world.store, [trained["version"]])
    assert held == [f"snapshot {trained['snapshot_id']}", f"model v{trained['version']}"]
    return trained


def _erase_with_events_in_flight(world: World) -> None:
    """Events of the user are accepted while the feature-store is paused; the erasure reaches
    it before they do."""
    feature_store = world.stack.processes["feature-store"]
    feature_store.signal_group(signal.SIGSTOP)
    try:
        time.sleep(1.5)  # its blocking read (1 s) is over: what comes now waits in Redis
        late = _events_of_the_erased_user(IN_FLIGHT, prefix="late-", kind="purchase")
        accepted = world.http.post("/v1/events", json={"events": late}, headers=client_headers())
        assert accepted.status_code == 202, accepted.text
        url = f"{world.stack.gateway}/v1/users/{PATH}"
        with ThreadPoolExecutor(1) as pool:
            erasing = pool.submit(httpx.delete, url, headers=admin_headers(), timeout=30)
            time.sleep(0.5)  # the request waits at the paused feature-store
            feature_store.signal_group(signal.SIGCONT)
            erased = erasing.result(timeout=30)
    finally:
        feature_store.signal_group(signal.SIGCONT)
    assert erased.status_code == 204, erased.text


def _seconds_until_unpersonalised(world: World, since: float) -> float:
    """From ``since`` (monotonic) to the end of the first poll where neither replica nor the
    gateway personalises the user; fails past the deadline."""
    while time.monotonic() - since < DEADLINE_SECONDS:
        if not _personalised(_lists(world)):
            return time.monotonic() - since
    raise AssertionError(f"still personalised {DEADLINE_SECONDS}s after the erasure")


def _only_popular_lists_served_since(world: World, erasure_started: float) -> None:
    """The ephemeral Redis names the user only in the records of popular lists served after
    the erasure (this test's own requests): nothing from before, nothing personalised."""
    for found in occurrences(world.ephemeral, ERASED):
        assert found.key.startswith(keys.recommendations_of(ERASED).encode()), str(found)
        record = ServedList.model_validate_json(world.ephemeral.get(found.key) or b"")
        assert record.strategy is Strategy.POPULAR, str(found)
        assert record.served_at >= erasure_started, str(found)


def _report(world: World, record_property: Any, name: str, seconds: float) -> None:
    """A measured figure (docs/failure-modes.md quotes it): in the JUnit report, and shown
    by ``pytest -s``."""
    record_property(name, round(seconds, 3))
    print(f"\n[{world.stack.tier.name}] {name}: {seconds:.3f}s")  # noqa: T201


def test_an_erased_user_is_gone_from_every_replica_store_snapshot_and_model(
    world: World, record_property: Any
) -> None:
    before = _a_model_and_every_kind_of_trace(world)
    versions = [int(before["version"])]

    erasure_started = time.time()
    _erase_with_events_in_flight(world)
    erased_at = time.monotonic()

    delay = _seconds_until_unpersonalised(world, erased_at)
    _report(world, record_property, "erasure_delay_seconds", delay)

    # The events in flight were dropped when applied (counted), then trimmed.
    wait_for_applied(world.stack.gateway, timeout=60, trimmed=True)
    pipeline = world.http.get("/v1/pipeline", headers=admin_headers()).json()
    assert pipeline["counters"]["erased"] >= IN_FLIGHT, pipeline["counters"]
    assert not _personalised(bodies := _lists(world)), bodies

    # Nothing in any Redis names the user; the tombstone holds a digest.
    left = _in_data_tier(world.stack)
    assert not left, "\n".join(map(str, left))
    assert world.inspector.hget(world.partition.erased, keys.user_digest(ERASED)) is not None
    _only_popular_lists_served_since(world, erasure_started)

    # The older snapshot and model are rewritten by the task the DELETE sent.
    wait_until(lambda: _rewritten(world.store, versions), timeout=60, what="artifacts rewritten")
    _report(world, record_property, "artifacts_rewritten_seconds", time.monotonic() - erased_at)

    # The next snapshot and model never held the user.
    after = retrain(world.stack.gateway, force=True)
    versions.append(int(after["version"]))
    assert after["snapshot_id"] != before["snapshot_id"]
    assert not _holders(world.store, versions), _holders(world.store, versions)
    _, files = world.store.read_bundle(model_folder(versions[-1]))
    assert "a1" in load_npz(files[IDS_FILE])["user_ids"]  # the read sees real users

    # A rollback to the version trained before the erasure.
    rollback = world.http.post(f"/v1/models/{versions[0]}/activate", headers=admin_headers())
    assert rollback.status_code == 200, rollback.text
    wait_until(lambda: _serving(world) == {versions[0]}, timeout=30, what="the rolled-back version")
    assert not _personalised(bodies := _lists(world)), bodies
    known = world.http.get("/v1/users/a3/recommendations", headers=client_headers()).json()
    assert (known["strategy"], known["model_version"]) == ("personalized", versions[0])


def _serving(world: World) -> set[int]:
    """The versions the recommender replicas hold in memory."""
    return {
        world.http.get(f"{world.stack.url(name)}/model").json()["serving_version"]
        for name in ("recommender1", "recommender2")
    }
