"""The ingestion pipeline seen by admins: its status, dead letters and their replay."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    Field,
)

from recsys_shared.schemas.base import InputModel, Integer
from recsys_shared.schemas.models import SnapshotInfo

#: The window of the pipeline status's throughput series and per-second means.
THROUGHPUT_WINDOW_SECONDS = 60


# ── status ────────────────────────────────────────────────────────────────────────────────
class ThroughputPoint(BaseModel):
    second: int
    accepted: int
    applied: int


class PipelineStatus(BaseModel):
    accepted_per_second: float = Field(
        description=f"Mean over the last {THROUGHPUT_WINDOW_SECONDS} s"
    )
    applied_per_second: float = Field(
        description=f"Mean over the last {THROUGHPUT_WINDOW_SECONDS} s"
    )
    throughput: list[ThroughputPoint]
    counters: dict[str, int] = Field(
        description="Totals over every partition: accepted, duplicates, applied, redelivered, "
        "dead_letters, erased; rejected (refused at the door)."
    )
    rejects: dict[str, int] = Field(description="Problems found in refused batches, by kind.")
    partitions: int
    stream_length: int = Field(description="Entries kept in the streams, every partition.")
    consumer_lag: int = Field(description="Events accepted and not yet applied.")
    pending: int = Field(description="Events delivered to a consumer and not yet applied.")
    dead_letters: int
    consumers: dict[str, float] = Field(
        description="Each consumer's last completed read (the latest over its partitions)."
    )
    last_snapshot: SnapshotInfo | None


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
    limit: Integer = Field(default=1000, ge=1, le=100_000, description="At most this many.")


class ReplayResult(BaseModel):
    replayed: int = Field(description="Dead letters put back into the events streams.")
    skipped: int = Field(description="Dead letters left: no event in them to replay.")


# ── the data tier's layout ────────────────────────────────────────────────────────────────
class DataLayout(BaseModel):
    """How the data tier's keys are laid out, recorded by the first service to start on it
    (``keys.DATA_LAYOUT``): a service configured otherwise would look for users where their
    data is not."""

    version: int = Field(ge=1, description="The key scheme's version (recsys_shared.layout)")
    partitions: int = Field(ge=1, description="EVENT_PARTITIONS the users are spread over")
