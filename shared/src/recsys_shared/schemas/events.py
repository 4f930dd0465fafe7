"""Interaction events: as a client sends them, and as they sit in the events streams."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from recsys_shared.schemas.base import (
    EARLIEST_TIMESTAMP,
    MAX_BATCH_EVENTS,
    MAX_CLOCK_SKEW,
    Identifier,
    InputModel,
    Number,
    Timestamp,
    event_time,
)


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    LIKE = "like"
    RATING = "rating"


#: Confidence each kind of interaction adds to a user-item pair (ratings use RATING_NEUTRAL).
EVENT_WEIGHTS: Final[dict[EventType, float]] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_CART: 3.0,
    EventType.LIKE: 4.0,
    EventType.PURCHASE: 5.0,
}
#: A rating above this says "more of this", below it "not for me": a rating's weight is its
#: distance from this point, so a low rating is negative evidence (still seen, never dropped).
RATING_NEUTRAL: Final = 2.5
#: Cap on one user-item weight so that a bot clicking one item all day cannot dominate training.
MAX_WEIGHT: Final = 20.0


def event_weight(event_type: EventType, value: float | None) -> float:
    """Signed confidence that the user likes the item, as the feature-store stores it.

    Positive for every interaction but a low rating; a rating below ``RATING_NEUTRAL`` is
    negative (the further below, the more), exactly neutral is 0. How much a negative weight
    counts is each recipe's choice (its ``negative_weight``), tuned at the gate.
    """
    if event_type is EventType.RATING:
        if value is None:  # validation refuses it; a stored one says nothing either way
            return 0.0
        return min(max(value - RATING_NEUTRAL, -MAX_WEIGHT), MAX_WEIGHT)
    return EVENT_WEIGHTS[event_type]


class EventIn(InputModel):
    """One interaction as a client sends it."""

    # The cross-field rule, published in the schema too: a rating carries a numeric value.
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "if": {"properties": {"type": {"const": "rating"}}, "required": ["type"]},
            "then": {"required": ["value"], "properties": {"value": {"type": "number"}}},
        },
    )

    event_id: Identifier | None = Field(
        default=None, description="Makes resubmission idempotent; assigned when absent."
    )
    user_id: Identifier
    item_id: Identifier
    type: EventType
    value: Number | None = Field(default=None, description="Finite; required for `rating`.")
    timestamp: Timestamp | None = Field(
        default=None,
        # The earliest day is in the schema (the pattern on the year); the clock's bound
        # cannot be, so the API corrects a time ahead of it rather than refusing one.
        description=(
            f"RFC 3339 with a UTC offset, written in {EARLIEST_TIMESTAMP.year} or later. A time "
            f"more than {int(MAX_CLOCK_SKEW.total_seconds())} s ahead of the server's clock is "
            "recorded as the time the event was received; defaults to now."
        ),
        json_schema_extra={
            "x-earliest": EARLIEST_TIMESTAMP.isoformat(),
            "x-max-clock-skew-seconds": int(MAX_CLOCK_SKEW.total_seconds()),
        },
    )
    recommendation_id: Identifier | None = Field(
        default=None, description="The recommendation this interaction came from, if any."
    )

    @model_validator(mode="after")
    def _rating_needs_value(self) -> EventIn:
        if self.type is EventType.RATING and self.value is None:
            raise ValueError("a 'rating' event needs a 'value'")
        return self


class EventBatch(InputModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events newly stored in the stream.")
    duplicates: int = Field(description="Events whose event_id was already stored; not re-applied.")


class StoredEvent(BaseModel):
    """An event as it sits in the Redis stream: normalised, with an id and a time."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    type: EventType
    value: float | None = None
    ts: float = Field(description="Event time, seconds since the Unix epoch.")
    recommendation_id: Identifier | None = None
    received_at: float

    @property
    def weight(self) -> float:
        return event_weight(self.type, self.value)

    @classmethod
    def from_inputs(cls, events: Sequence[EventIn], *, now: datetime) -> list[StoredEvent]:
        """Validated input events as stored: a client's ``event_id`` or a fresh one, the
        event's time (``event_time``: as written, or ``now``), received ``now``. One
        validation call for the batch (pydantic's core, cheaper than building the models one
        by one in Python)."""
        received_at = now.timestamp()
        return _STORED_EVENTS.validate_python(
            [
                {
                    "event_id": event.event_id or uuid.uuid4().hex,
                    "user_id": event.user_id,
                    "item_id": event.item_id,
                    "type": event.type,
                    "value": event.value,
                    "ts": event_time(event.timestamp, now).timestamp(),
                    "recommendation_id": event.recommendation_id,
                    "received_at": received_at,
                }
                for event in events
            ]
        )


_STORED_EVENTS = TypeAdapter(list[StoredEvent])
