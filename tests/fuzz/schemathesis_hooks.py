"""Schemathesis hooks: the one event rule a JSON Schema cannot state.

A timestamp must lie between 1990 and now (plus a few minutes of clock skew): the bound moves
with the clock, so the schema can only say "date-time". Generated events get a timestamp inside
the bounds when theirs is outside, so "valid by the schema" also means valid by the contract;
every other part of each generated body, valid or not, is sent as generated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import schemathesis

from recsys_shared.schemas import EARLIEST_TIMESTAMP, MAX_CLOCK_SKEW


def _inside_bounds(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value  # not a date-time at all: a negative case, sent as it is
    if moment.tzinfo is None:
        return value
    if EARLIEST_TIMESTAMP <= moment <= datetime.now(UTC) + MAX_CLOCK_SKEW:
        return value
    return "2024-05-01T12:00:00Z"


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        for event in body["events"]:
            if isinstance(event, dict) and "timestamp" in event:
                event["timestamp"] = _inside_bounds(event["timestamp"])
    return body
