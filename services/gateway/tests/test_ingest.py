"""Ingestion over several partitions (EVENT_PARTITIONS > 1) and its idempotency markers: each
event goes to its user's partition; a (user, event_id) is stored once within the window; a
batch that only some partitions stored is a 503 to resend whole."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from gateway.ingest import marker_digest
from recsys_shared import keys
from recsys_shared.schemas import StoredEvent
from recsys_shared.testing import assert_problem

PARTITIONS = keys.Partitions(4)
WINDOW = 3600


def _users(count: int, *, partition: int | None = None) -> list[str]:
    """``count`` user ids, of one partition or spread over every partition."""
    found = []
    for index in range(10_000):
        user = f"user-{index}"
        if partition is None or PARTITIONS.of(user).number == partition:
            found.append(user)
        if len(found) == count:
            return found
    raise AssertionError("not enough users")


def _event(user_id: str, event_id: str | None, item_id: str = "i1") -> dict[str, Any]:
    event = {"user_id": user_id, "item_id": item_id, "type": "view"}
    return {**event, "event_id": event_id} if event_id is not None else event


def _stored(store: redis.Redis, partition: keys.Partition) -> list[StoredEvent]:
    return [
        StoredEvent.model_validate_json(fields[keys.EVENT_FIELD])
        for _, fields in store.xrange(partition.events)
    ]


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """The gateway's Redis without decoding: markers are binary records."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _markers(raw: redis.Redis, user_id: str) -> list[tuple[bytes, int]]:
    """The user's markers as (event_id digest, second stored), oldest first."""
    blob = raw.get(PARTITIONS.of(user_id).markers(user_id)) or b""
    assert len(blob) % keys.MARKER_BYTES == 0
    return [
        (
            blob[at : at + keys.MARKER_DIGEST_BYTES],
            struct.unpack(">I", blob[at + keys.MARKER_DIGEST_BYTES : at + keys.MARKER_BYTES])[0],
        )
        for at in range(0, len(blob), keys.MARKER_BYTES)
    ]


@pytest.fixture
def gateway(make_gateway: Any) -> Any:
    return make_gateway(event_partitions=PARTITIONS.count, idempotency_window_seconds=WINDOW)


def _post(gateway: Any, headers: dict[str, str], events: list[dict[str, Any]]) -> Any:
    return gateway.client.post("/v1/events", json={"events": events}, headers=headers)


def test_a_batch_is_split_by_the_users_partition(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    users = _users(12)
    assert {PARTITIONS.of(user).number for user in users} == {0, 1, 2, 3}
    events = [_event(user, f"e-{index}") for index, user in enumerate(users)]

    response = _post(gateway, client_headers, events)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 12, "duplicates": 0}
    for partition in PARTITIONS.all:
        mine = [user for user in users if PARTITIONS.of(user) == partition]
        stored = _stored(store, partition)
        # Each stream holds exactly its users' events, in the order they were sent.
        assert [event.user_id for event in stored] == mine
        assert store.hget(partition.stats, keys.STAT_ACCEPTED) == str(len(mine))


def test_two_users_may_send_the_same_event_id(
    gateway: Any, store: redis.Redis, raw: redis.Redis, client_headers: dict[str, str]
) -> None:
    same_partition = _users(2, partition=1)
    other_partitions = [_users(1, partition=0)[0], _users(1, partition=3)[0]]
    users = [*same_partition, *other_partitions]
    events = [_event(user, "order-1") for user in users]

    first = _post(gateway, client_headers, events)
    again = _post(gateway, client_headers, events)

    assert first.json() == {"accepted": 4, "duplicates": 0}
    assert again.json() == {"accepted": 0, "duplicates": 4}
    stored = [event for partition in PARTITIONS.all for event in _stored(store, partition)]
    assert sorted(event.user_id for event in stored) == sorted(users)
    # One marker per user, each naming the id's digest.
    for user in users:
        assert [digest for digest, _ in _markers(raw, user)] == [marker_digest("order-1")]


def test_an_event_without_id_leaves_no_marker(
    gateway: Any, store: redis.Redis, raw: redis.Redis, client_headers: dict[str, str]
) -> None:
    [user] = _users(1)

    for _ in range(2):
        assert _post(gateway, client_headers, [_event(user, None)]).json() == {
            "accepted": 1,
            "duplicates": 0,
        }

    assert raw.keys(f"*{keys.USER_MARKERS_SUFFIX}") == []
    stored = _stored(store, PARTITIONS.of(user))
    assert len({event.event_id for event in stored}) == 2  # each given an id of its own


def test_a_resend_within_the_window_is_a_duplicate_and_after_it_is_new(
    gateway: Any, store: redis.Redis, raw: redis.Redis, client_headers: dict[str, str]
) -> None:
    [user] = _users(1)
    partition = PARTITIONS.of(user)
    events = [_event(user, "old"), _event(user, "recent")]
    before = int(time.time())
    assert _post(gateway, client_headers, events).json() == {"accepted": 2, "duplicates": 0}
    markers = _markers(raw, user)
    assert [digest for digest, _ in markers] == [marker_digest("old"), marker_digest("recent")]
    assert all(before <= second <= int(time.time()) for _, second in markers)
    assert 0 < raw.ttl(partition.markers(user)) <= WINDOW

    assert _post(gateway, client_headers, events).json() == {"accepted": 0, "duplicates": 2}

    # Age the first marker past the window, as if it had been stored WINDOW + 1 s ago.
    aged = marker_digest("old") + struct.pack(">I", markers[0][1] - WINDOW - 1)
    raw.set(partition.markers(user), aged + raw.get(partition.markers(user))[keys.MARKER_BYTES :])

    resent = _post(gateway, client_headers, events)

    assert resent.json() == {"accepted": 1, "duplicates": 1}
    assert [event.event_id for event in _stored(store, partition)][-1] == "old"
    # The expired marker was dropped and the new one appended after the one still valid.
    assert [digest for digest, _ in _markers(raw, user)] == [
        marker_digest("recent"),
        marker_digest("old"),
    ]


def test_a_users_markers_live_one_window_past_their_last_batch(
    gateway: Any, raw: redis.Redis, client_headers: dict[str, str]
) -> None:
    [user] = _users(1)
    key = PARTITIONS.of(user).markers(user)
    assert _post(gateway, client_headers, [_event(user, "first")]).status_code == 202
    raw.expire(key, 5)  # as if the first batch were nearly a window old

    assert _post(gateway, client_headers, [_event(user, "second")]).status_code == 202

    # Appended to, and its time to live restarted: the new marker lasts its whole window.
    assert [digest for digest, _ in _markers(raw, user)] == [
        marker_digest("first"),
        marker_digest("second"),
    ]
    assert WINDOW - 5 < raw.ttl(key) <= WINDOW


def test_a_batch_only_partly_stored_asks_for_a_resend(
    make_gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(event_partitions=PARTITIONS.count, max_stream_backlog=3)
    full = PARTITIONS.all[2]
    for _ in range(3):
        store.xadd(full.events, {keys.EVENT_FIELD: "{}"})
    open_users = _users(2, partition=0) + _users(1, partition=3)
    blocked_users = _users(2, partition=2)
    events = [_event(user, f"e-{user}") for user in (*open_users, *blocked_users)]

    response = _post(gateway, client_headers, events)

    assert_problem(response, 503)
    assert response.headers["retry-after"] == "2"  # the refusing partition's own advice
    body = response.json()
    assert body["type"] == "urn:recsys:problem:store-unavailable"
    assert "partition 2" in body["detail"]
    assert "resend the whole batch" in body["detail"]
    assert "events with an event_id are recognised as duplicates" in body["detail"]
    # The open partitions stored their share; the full one nothing.
    stored = [
        event.user_id for number in (0, 3) for event in _stored(store, PARTITIONS.all[number])
    ]
    assert sorted(stored) == sorted(open_users)
    assert store.xlen(full.events) == 3

    # Once the backlog drained, the resent batch stores only what was missing.
    store.xtrim(full.events, maxlen=0)
    resent = _post(gateway, client_headers, events)
    assert resent.status_code == 202, resent.text
    assert resent.json() == {"accepted": 2, "duplicates": 3}
    assert sorted(event.user_id for event in _stored(store, full)) == sorted(blocked_users)


def test_a_batch_no_partition_stored_is_the_refusals_own_problem(
    make_gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(event_partitions=PARTITIONS.count, max_stream_backlog=1)
    store.xadd(PARTITIONS.all[1].events, {keys.EVENT_FIELD: "{}"})

    response = _post(gateway, client_headers, [_event(_users(1, partition=1)[0], "e1")])

    assert response.status_code == 503
    assert response.json()["type"] == "urn:recsys:problem:backpressure"
    assert response.headers["retry-after"] == "2"


def test_a_resend_of_events_no_replica_confirmed_waits_for_the_replicas_again(
    make_gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    # A lone Redis: no replica ever confirms, as when the replicas lag behind the master.
    gateway = make_gateway(
        event_partitions=PARTITIONS.count, durable_replicas=1, durable_replicas_timeout_ms=20
    )
    events = [_event(user, f"e-{user}") for user in _users(3)]

    first = _post(gateway, client_headers, events)
    assert_problem(first, 503)
    assert "replica(s) confirmed them" in first.json()["detail"]
    assert sum(store.xlen(partition.events) for partition in PARTITIONS.all) == 3  # on the master

    # The resend finds only duplicates; a 202 now would acknowledge events on one node only.
    resent = _post(gateway, client_headers, events)
    assert_problem(resent, 503)
    assert "replica(s) confirmed them" in resent.json()["detail"]
