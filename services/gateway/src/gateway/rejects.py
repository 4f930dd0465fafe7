"""Counting the events refused at the door, by reason, for the pipeline status and metrics."""

from __future__ import annotations

import logging
import re
from collections import Counter

from fastapi import Request

from gateway import metrics
from gateway.auth import authorize_route
from gateway.deps import GatewayState
from recsys_shared import keys
from recsys_shared.errors import RecsysError
from recsys_shared.schemas import EventIn, FieldError
from recsys_shared.web.problems import JSON_INVALID
from recsys_shared.web.state import lifespan_state

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
_INDEX = re.compile(r"\[\d+\]")
#: The field names a reason may carry. A name the client invented is ``unknown_field``: a reason
#: is a metric label and a field of one hash, so the set must stay bounded whatever is sent.
_NAMED_FIELDS = frozenset(EventIn.model_fields) | {"events", "body"}


def reject_reason(error: FieldError) -> str:
    """``user_id:string_too_short`` for ``events[3].user_id``; ``event:value_error`` for a rule
    about a whole event; ``body:json_invalid`` for a body that is not even JSON;
    ``unknown_field:extra_forbidden`` for any field the contract does not have."""
    tail = _INDEX.sub("", error.field).rpartition(".")[2] or "body"
    if tail == "events" and error.index is not None:
        tail = "event"
    elif tail not in _NAMED_FIELDS:
        tail = "unknown_field"
    return f"{tail}:{error.type}"


async def on_invalid_input(request: Request, errors: list[FieldError]) -> None:
    """Before a 422: the route's key check if the refusal came before it (a body that is not
    even JSON), so that only a caller who may use the route learns why, or is counted."""
    if any(error.type == JSON_INVALID for error in errors):
        await authorize_route(request)
    await count_rejects(request, errors)


async def count_rejects(request: Request, errors: list[FieldError]) -> None:
    if request.url.path != EVENTS_PATH:
        return
    reasons = Counter(reject_reason(error) for error in errors)
    rejected_events = len({error.index for error in errors if error.index is not None}) or 1
    for reason, count in reasons.items():
        metrics.EVENT_REJECTS.labels(reason).inc(count)
    metrics.EVENTS_RECEIVED.labels("rejected").inc(rejected_events)
    client = lifespan_state(request, GatewayState).redis
    commands: list[tuple[str | int, ...]] = [
        ("HINCRBY", keys.PIPELINE_REJECTS, reason, count) for reason, count in reasons.items()
    ]
    commands.append(("INCRBY", keys.PIPELINE_REJECTED, rejected_events))
    try:
        await client.execute_many(commands)
    except RecsysError as error:
        # The client still deserves its 422: counting is best effort.
        log.warning("could not count rejected events: %s", error.detail)
