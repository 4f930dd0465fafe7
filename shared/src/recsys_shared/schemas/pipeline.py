"""The ingestion pipeline seen by admins: dead letters and their replay."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    Field,
)

from recsys_shared.schemas.base import InputModel


# ── dead letters ──────────────────────────────────────────────────────────────────────────
class DeadLetterReason(StrEnum):
    """Why an entry of the events stream could not be applied."""

    INVALID_EVENT = "invalid_event"  # not a stored event (written by something else)
    ENTRY_DELETED = "entry_deleted"  # trimmed or deleted while pending: nothing to replay


class DeadLetterEntry(BaseModel):
    """A stream entry the feature-store could not apply, kept to be inspected and replayed."""

    id: str = Field(description="The dead letter's own id, in its partition.")
    partition: int
    stream_id: str = Field(description="Where the entry was in the events stream.")
    reason: str = Field(description="Why it could not be applied (a DeadLetterReason).")
    detail: str = ""
    entry: str = Field(description="The stream entry as it was (the stored event's JSON).")


class DeadLetters(BaseModel):
    total: int = Field(description="Dead letters kept, over every partition.")
    by_reason: dict[str, int]
    entries: list[DeadLetterEntry] = Field(description="Newest first, up to the limit asked.")


class ReplayRequest(InputModel):
    reason: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Replay only the dead letters with this reason."
    )
    limit: int = Field(default=1000, ge=1, le=100_000, description="At most this many.")


class ReplayResult(BaseModel):
    replayed: int = Field(description="Dead letters put back into the events streams.")
    skipped: int = Field(description="Dead letters left: no event in them to replay.")
