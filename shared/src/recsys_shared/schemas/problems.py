"""Errors (RFC 9457 problem details) and health."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, WithJsonSchema

#: The media type every problem is sent as (RFC 9457).
PROBLEM_MEDIA_TYPE = "application/problem+json"
#: How many errors a problem lists; its detail counts them all. A 1 MB batch can hold 90,000
#: unknown fields: listed whole, the answer was ten times the request.
MAX_LISTED_ERRORS = 100


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
        description=f"What is wrong, the first {MAX_LISTED_ERRORS} (the detail counts them all)",
    )
    request_id: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
