"""Interaction events in."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway import metrics
from gateway.auth import ClientAuth
from gateway.deps import StateDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared.schemas import EventBatch, EventsAccepted

router = APIRouter(
    prefix="/v1/events", tags=["events"], dependencies=[ClientAuth], responses=PROBLEM_RESPONSES
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventsAccepted,
    summary="Send a batch of 1 to 1000 interaction events",
    description=(
        "202 once every event is durably in its partition's events stream. A batch with any "
        "invalid event is rejected whole (422, each bad index listed) and nothing of it is "
        "stored. An event whose `event_id` the same user sent within the idempotency window is "
        "counted under `duplicates` and applied once; events without an `event_id` are never "
        "deduplicated. 503 with `Retry-After` when the store is unavailable or a partition's "
        "backlog is full: resend the whole batch. Part of it may have been stored (the detail "
        "says so); its events with an `event_id` are then recognised as duplicates. The "
        "body may be sent compressed (`Content-Encoding: gzip`: a tenth of the bytes or less for a "
        "large batch); `MAX_BODY_BYTES` bounds it both as sent and decompressed."
    ),
)
async def post_events(batch: EventBatch, state: StateDep) -> EventsAccepted:
    result = await state.ingestor.ingest(batch)
    metrics.EVENTS_RECEIVED.labels("accepted").inc(result.accepted)
    metrics.EVENTS_RECEIVED.labels("duplicate").inc(result.duplicates)
    return result
