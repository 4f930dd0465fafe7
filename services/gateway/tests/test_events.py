"""Event ingestion on a real Redis: accepted events are in the stream once, bad batches leave
nothing behind, and every failure is a problem response, never a 202."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from gateway.ingest import marker_digest
from recsys_shared import keys
from recsys_shared.processes import free_port
from recsys_shared.schemas import StoredEvent
from recsys_shared.testing import assert_problem

# The default deployment: one partition (EVENT_PARTITIONS=1); test_ingest.py covers several.
PARTITION = keys.Partitions(1).all[0]


def _event(index: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{index}",
        "user_id": f"u{index % 3}",
        "item_id": f"i{index}",
        "type": "view",
        **fields,
    }


def _stored(store: redis.Redis) -> list[StoredEvent]:
    entries = store.xrange(PARTITION.events)
    assert all(set(fields) == {keys.EVENT_FIELD} for _, fields in entries)
    return [StoredEvent.model_validate_json(fields[keys.EVENT_FIELD]) for _, fields in entries]


def _marked(redis_url: str, user_id: str) -> set[bytes]:
    """The event_id digests the user's idempotency markers remember (12-byte records)."""
    with redis.Redis.from_url(redis_url) as raw:
        blob = raw.get(PARTITION.markers(user_id)) or b""
    return {
        blob[at : at + keys.MARKER_DIGEST_BYTES] for at in range(0, len(blob), keys.MARKER_BYTES)
    }


def _post(gateway: Any, headers: dict[str, str], events: list[dict[str, Any]]) -> Any:
    return gateway.client.post("/v1/events", json={"events": events}, headers=headers)


def test_a_valid_batch_is_stored_in_the_stream(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    events = [
        _event(0, timestamp="2024-05-01T12:00:00Z"),
        _event(1, type="rating", value=4.5, recommendation_id="r1"),
        _event(2, type="purchase"),
    ]
    response = _post(gateway, client_headers, events)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}
    stored = _stored(store)
    assert [event.event_id for event in stored] == ["e0", "e1", "e2"]
    assert [event.type for event in stored] == ["view", "rating", "purchase"]
    assert stored[0].ts == moment.timestamp()
    assert stored[1].value == 4.5
    assert stored[1].recommendation_id == "r1"
    assert stored[2].user_id == "u2"
    assert stored[2].item_id == "i2"
    # Events without a timestamp are stamped with the time they were received.
    assert stored[2].ts == stored[2].received_at
    assert abs(stored[2].received_at - datetime.now(UTC).timestamp()) < 60
    assert store.hget(PARTITION.stats, keys.STAT_ACCEPTED) == "3"


def test_an_event_without_id_gets_one(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    event = {"user_id": "u", "item_id": "i", "type": "click"}
    first = _post(gateway, client_headers, [event])
    second = _post(gateway, client_headers, [event])

    assert first.json() == {"accepted": 1, "duplicates": 0}
    # Without an event_id the gateway cannot tell a resubmission: both are kept.
    assert second.json() == {"accepted": 1, "duplicates": 0}
    ids = [stored.event_id for stored in _stored(store)]
    assert len(ids) == 2
    assert len(set(ids)) == 2
    assert all(event_id for event_id in ids)


def test_resubmitting_a_batch_counts_duplicates_and_stores_nothing(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    events = [_event(index) for index in range(4)]
    assert _post(gateway, client_headers, events).json() == {"accepted": 4, "duplicates": 0}

    again = _post(gateway, client_headers, events)

    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 4}
    assert store.xlen(PARTITION.events) == 4
    assert store.hget(PARTITION.stats, keys.STAT_DUPLICATES) == "4"

    mixed = _post(gateway, client_headers, [_event(3), _event(4)])
    assert mixed.json() == {"accepted": 1, "duplicates": 1}
    assert [event.event_id for event in _stored(store)] == ["e0", "e1", "e2", "e3", "e4"]


def test_the_same_event_id_twice_in_one_batch_is_stored_once(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    response = _post(gateway, client_headers, [_event(1), _event(1, type="like")])

    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert [event.type for event in _stored(store)] == ["view"]


def test_a_batch_with_invalid_events_is_refused_whole(
    gateway: Any, store: redis.Redis, redis_url: str, client_headers: dict[str, str]
) -> None:
    _post(gateway, client_headers, [_event(100)])
    before = store.xlen(PARTITION.events)
    events = [
        _event(0),
        _event(1, type="teleport"),
        _event(2, type="rating"),  # a rating needs a value
        _event(3, timestamp="1970-01-01T00:00:00Z"),  # a broken clock
        _event(4, event_id="has space"),
        _event(5),
    ]

    response = _post(gateway, client_headers, events)

    assert_problem(response, 422)
    body = response.json()
    assert body["status"] == 422
    assert body["type"] == "urn:recsys:problem:invalid-input"
    assert {error["index"] for error in body["errors"]} == {1, 2, 3, 4}
    fields = {error["field"] for error in body["errors"]}
    assert {"events[1].type", "events[3].timestamp", "events[4].event_id"} <= fields
    assert "in entries 1, 2, 3, 4; nothing of the batch was stored" in body["detail"]
    # Nothing of the batch was stored, not even its valid events, nor marked as seen.
    assert store.xlen(PARTITION.events) == before
    assert not store.exists(PARTITION.markers("u0"), PARTITION.markers("u2"))
    assert _marked(redis_url, "u1") == {marker_digest("e100")}
    # A corrected resubmission is accepted in full.
    fixed = _post(gateway, client_headers, [_event(0), _event(5)])
    assert fixed.json() == {"accepted": 2, "duplicates": 0}


def test_rejects_are_counted_by_reason_and_invented_fields_make_no_reason_of_their_own(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    def counted() -> dict[str, int]:
        return {reason: int(n) for reason, n in store.hgetall(keys.PIPELINE_REJECTS).items()}

    def exported(reason: str) -> float:
        labels = {"reason": reason}
        return REGISTRY.get_sample_value("recsys_event_rejects_total", labels) or 0.0

    before, exported_before = counted(), exported("unknown_field:extra_forbidden")
    invented = {f"invented_{n}": 0 for n in range(5)}
    response = _post(gateway, client_headers, [_event(0, **invented), _event(1, user_id="")])

    assert_problem(response, 422)
    added = {reason: n - before.get(reason, 0) for reason, n in counted().items()}
    assert {reason: n for reason, n in added.items() if n} == {
        "unknown_field:extra_forbidden": 5,
        "user_id:string_too_short": 1,
    }
    assert not any("invented" in reason for reason in counted())
    assert exported("unknown_field:extra_forbidden") == exported_before + 5


def test_a_time_ahead_of_the_clock_is_stored_as_the_time_of_receipt(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    sent = datetime.now(UTC)
    ahead = (sent + timedelta(days=2)).isoformat()
    corrected_before = _corrected_times()

    response = _post(gateway, client_headers, [_event(0, timestamp=ahead), _event(1)])

    assert response.status_code == 202
    stored = _stored(store)
    assert all(sent.timestamp() <= event.ts <= datetime.now(UTC).timestamp() for event in stored)
    # Counted, so a client with a fast clock shows on the dashboards.
    assert _corrected_times() == corrected_before + 1


def _corrected_times() -> float:
    return REGISTRY.get_sample_value("recsys_event_times_corrected_total") or 0.0


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_size_is_bounded(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str], count: int
) -> None:
    response = _post(gateway, client_headers, [_event(index) for index in range(count)])

    assert_problem(response, 422)
    assert response.json()["errors"][0]["field"] == "events"
    assert store.xlen(PARTITION.events) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"events": [], "extra": 1}',
        b'[{"user_id": "u"}]',
        b'{"events": [{"user_id": "u", "item_id": "i", "type": "view", "value": NaN}]}',
    ],
)
def test_malformed_bodies_are_problems(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str], body: bytes
) -> None:
    response = gateway.client.post(
        "/v1/events",
        content=body,
        headers={**client_headers, "Content-Type": "application/json"},
    )

    assert_problem(response, 422)
    assert store.xlen(PARTITION.events) == 0


def test_a_body_over_the_limit_is_refused(
    make_gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(max_body_bytes=2048)
    events = [_event(index) for index in range(40)]
    body = json.dumps({"events": events}).encode()
    assert len(body) > 2048

    declared = gateway.client.post(
        "/v1/events", content=body, headers={**client_headers, "Content-Type": "application/json"}
    )

    def chunks() -> Any:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    streamed = gateway.client.post(
        "/v1/events",
        content=chunks(),
        headers={**client_headers, "Content-Type": "application/json"},
    )

    for response in (declared, streamed):
        assert_problem(response, 413)
        assert response.json()["status"] == 413
    assert store.xlen(PARTITION.events) == 0
    # Under the limit the same gateway accepts.
    small = _post(gateway, client_headers, events[:3])
    assert small.status_code == 202


def test_a_gzip_batch_is_stored_as_it_was_before_compression(
    gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    events = [_event(index) for index in range(50)]
    body = gzip.compress(json.dumps({"events": events}).encode())
    headers = {**client_headers, "Content-Type": "application/json", "Content-Encoding": "gzip"}

    response = gateway.client.post("/v1/events", content=body, headers=headers)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 50, "duplicates": 0}
    assert [event.event_id for event in _stored(store)] == [f"e{index}" for index in range(50)]


def test_a_compressed_batch_is_bounded_once_decompressed_and_other_codings_refused(
    make_gateway: Any, store: redis.Redis, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(max_body_bytes=2048)
    body = json.dumps({"events": [_event(index) for index in range(40)]}).encode()
    compressed = gzip.compress(body)
    assert len(compressed) < 2048 < len(body)
    headers = {**client_headers, "Content-Type": "application/json"}

    inflated = gateway.client.post(
        "/v1/events", content=compressed, headers={**headers, "Content-Encoding": "gzip"}
    )
    brotli = gateway.client.post(
        "/v1/events", content=body[:1000], headers={**headers, "Content-Encoding": "br"}
    )

    assert "once decompressed" in assert_problem(inflated, 413)["detail"]
    assert "'br'" in assert_problem(brotli, 415)["detail"]
    assert brotli.headers["Accept-Encoding"] == "gzip"
    assert store.xlen(PARTITION.events) == 0


def test_redis_unreachable_is_a_503_never_a_202(
    make_gateway: Any, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_seconds=0.2
    )

    response = _post(gateway, client_headers, [_event(0)])

    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"] == "urn:recsys:problem:store-unavailable"
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"


def test_backpressure_refuses_when_the_backlog_is_full(
    make_gateway: Any, store: redis.Redis, redis_url: str, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(max_stream_backlog=5)
    assert _post(gateway, client_headers, [_event(index) for index in range(4)]).status_code == 202
    store.xadd(PARTITION.events, {keys.EVENT_FIELD: "{}"})

    response = _post(gateway, client_headers, [_event(10), _event(11)])

    assert_problem(response, 503)
    assert response.headers["retry-after"] == "2"
    assert response.json()["type"] == "urn:recsys:problem:backpressure"
    assert store.xlen(PARTITION.events) == 5
    # Refused events were not marked as seen, so a retry after the backlog drained stores them.
    assert not {marker_digest("e10"), marker_digest("e11")} & (
        _marked(redis_url, "u1") | _marked(redis_url, "u2")
    )
    store.xtrim(PARTITION.events, maxlen=0)
    retried = _post(gateway, client_headers, [_event(10), _event(11)])
    assert retried.json() == {"accepted": 2, "duplicates": 0}
