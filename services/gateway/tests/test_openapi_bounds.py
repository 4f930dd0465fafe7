"""The OpenAPI document states what the API enforces on an event's timestamp: the earliest
year as a pattern a client (or a fuzzer) validates with, and the clock's bound, which no schema
can state, as a correction rather than a refusal (a time too far ahead is the time of receipt).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from recsys_shared.schemas import TIMESTAMP_PATTERN


def _timestamp_schema(gateway: Any) -> dict[str, Any]:
    document: dict[str, Any] = gateway.client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    event = next(schema for name, schema in schemas.items() if name.startswith("EventIn"))
    timestamp: dict[str, Any] = event["properties"]["timestamp"]
    return timestamp


def _post_at(gateway: Any, headers: dict[str, str], moment: datetime) -> int:
    event = {"user_id": "u1", "item_id": "i1", "type": "click", "timestamp": moment.isoformat()}
    response = gateway.client.post("/v1/events", json={"events": [event]}, headers=headers)
    return int(response.status_code)


def test_the_timestamp_bounds_are_in_the_document(gateway: Any) -> None:
    schema = _timestamp_schema(gateway)
    written, _null = schema["anyOf"]
    assert written == {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}
    assert "1990" in schema["description"]
    assert "received" in schema["description"]
    assert schema["x-earliest"] == "1990-01-01T00:00:00+00:00"
    assert schema["x-max-clock-skew-seconds"] == 300


def test_the_documented_bounds_are_the_enforced_ones(
    gateway: Any, client_headers: dict[str, str]
) -> None:
    schema = _timestamp_schema(gateway)
    earliest = datetime.fromisoformat(schema["x-earliest"])
    skew = timedelta(seconds=schema["x-max-clock-skew-seconds"])
    assert _post_at(gateway, client_headers, earliest + timedelta(seconds=1)) == 202
    assert _post_at(gateway, client_headers, earliest - timedelta(seconds=1)) == 422
    # Ahead of the clock, within the skew or beyond it: kept, or corrected; never refused.
    assert (
        _post_at(gateway, client_headers, datetime.now(UTC) + skew - timedelta(seconds=30)) == 202
    )
    assert (
        _post_at(gateway, client_headers, datetime.now(UTC) + skew + timedelta(seconds=30)) == 202
    )
    assert _post_at(gateway, client_headers, datetime(2999, 1, 1, tzinfo=UTC)) == 202
