"""Errors (RFC 9457 problem details) and health."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from recsys_shared.schemas.base import MAX_BATCH_EVENTS, MAX_BATCH_ITEMS

#: The media type every problem is sent as (RFC 9457).
PROBLEM_MEDIA_TYPE = "application/problem+json"
#: How many errors a problem lists for one entry of a batch (and for the request itself); its
#: detail counts them all. Every bad entry is still listed, but a 1 MB batch of 90,000 unknown
#: fields is no longer answered with ten times its size.
MAX_ERRORS_PER_ENTRY = 5
#: The most a problem can list: that many for each entry of the largest batch and the request.
MAX_LISTED_ERRORS = (max(MAX_BATCH_EVENTS, MAX_BATCH_ITEMS) + 1) * MAX_ERRORS_PER_ENTRY


# ── errors and health ─────────────────────────────────────────────────────────────────────
class FieldError(BaseModel):
    """One thing wrong with a request: where, what, the check's kind, and for an entry of a
    batch (events, items) its position."""

    field: str = Field(description="Dotted path, e.g. 'events[3].user_id'; 'body' for the whole")
    message: str
    type: str = Field(default="invalid", description="The failed check, e.g. 'string_too_short'")
    # Omitted, not null, outside a batch (clients test for the key), so the schema says integer.
    index: Annotated[int | None, WithJsonSchema({"type": "integer", "minimum": 0})] = Field(
        default=None,
        exclude_if=lambda index: index is None,
        description="The entry's position in the batch; absent for a field of the request",
    )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = Field(
        default_factory=list,
        max_length=MAX_LISTED_ERRORS,
        description=(
            f"What is wrong: every bad entry of a batch, at most {MAX_ERRORS_PER_ENTRY} errors"
            " for each (the detail counts them all)"
        ),
    )
    request_id: str | None = None

    @classmethod
    def about_blank(cls, status: int, detail: str, request_id: str | None = None) -> Problem:
        """A problem of no type of ours: ``about:blank``, titled with the status's own phrase
        (as RFC 9457 asks of that type)."""
        try:
            title = HTTPStatus(status).phrase
        except ValueError:  # a status Python does not name
            title = "HTTP error"
        return cls(
            type="about:blank", title=title, status=status, detail=detail, request_id=request_id
        )


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
