"""Building blocks of the contract: identifiers, categories, timestamps, limits, inputs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

MAX_ID_LENGTH: Final = 128
MAX_BATCH_EVENTS: Final = 1000
MAX_BATCH_ITEMS: Final = 1000
MAX_K: Final = 100
MAX_OFFSET: Final = 1000
#: Users' lists the gateway asks a recommender for in one call (see UserListBatch).
MAX_BATCH_LISTS: Final = 64
#: How far ahead of the server's clock an event's time is kept as written; a time further
#: ahead comes from a fast client clock and is recorded as the time the event was received.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
#: Timestamps written before this day are refused as broken clocks (the epoch, zero values).
EARLIEST_TIMESTAMP: Final = datetime(1990, 1, 1, tzinfo=UTC)
#: The rule above as the OpenAPI document publishes it: a year from 1990 on, as written. One
#: pattern for the schema and the check (as ``ID_PATTERN``), so a client's validator and ours
#: agree on every string, whatever its UTC offset.
TIMESTAMP_PATTERN: Final = r"^(?:199\d|[2-9]\d{3})-"
#: The earliest instant an accepted timestamp can name: the first day written at the largest
#: UTC offset RFC 3339 allows (+23:59), for checks on stored times.
EARLIEST_INSTANT: Final = EARLIEST_TIMESTAMP - timedelta(hours=23, minutes=59)


#: Control characters (C0, DEL, C1), as a regex class's contents: no text field takes them.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
#: What an id refuses: whitespace, control characters, "/" (an id must fit in one URL path
#: segment) and U+FFFD, which is what a URL's bytes that are not UTF-8 decode to: "%FF" and
#: "%FE" would otherwise both name the id "\ufffd".
_ID_REFUSED = rf"\s/{_CONTROL}\ufffd"
#: One pattern is both the rule the services enforce (pydantic's Rust regex) and the one the
#: OpenAPI document publishes, so a client's validator and ours always agree.
ID_PATTERN: Final = rf"^[^{_ID_REFUSED}]+$"
#: Free text (titles): anything but control characters.
TEXT_PATTERN: Final = rf"^[^{_CONTROL}]+$"
#: Experiment ids (path parameters); task ids (Celery's, path parameters).
DIGITS_PATTERN: Final = r"^[0-9]+$"
TASK_ID_PATTERN: Final = r"^[A-Za-z0-9-]+$"

Identifier = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, examples=["42"])
]
#: A category: any text without control characters or surrounding whitespace, as real
#: catalogues name them ("Science Fiction", "Home & Garden", "(no genres listed)").
CATEGORY_PATTERN: Final = rf"^[^\s{_CONTROL}](?:[^{_CONTROL}]*[^\s{_CONTROL}])?$"
Category = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=CATEGORY_PATTERN, examples=["Science Fiction"]),
]


class PatternRule(NamedTuple):
    """What a published pattern means, for the person reading the 422 that refused a string
    (pydantic's own message quotes the regex): the rule in words, and a regex that finds the
    first character breaking it, so the message can name that character and where it is."""

    rule: str
    breaks: str


PATTERN_RULES: Final[Mapping[str, PatternRule]] = {
    ID_PATTERN: PatternRule(
        "an id has no whitespace, control characters, '/' or U+FFFD, the mark of bytes that"
        " are not UTF-8",
        rf"[{_ID_REFUSED}]",
    ),
    TEXT_PATTERN: PatternRule("text has no control characters", rf"[{_CONTROL}]"),
    CATEGORY_PATTERN: PatternRule(
        "a category has no control characters and no whitespace at either end",
        rf"[{_CONTROL}]|^\s|\s$",
    ),
    DIGITS_PATTERN: PatternRule("an experiment id is digits only", r"[^0-9]"),
    TASK_ID_PATTERN: PatternRule("a task id has letters, digits and '-' only", r"[^A-Za-z0-9-]"),
}


def json_number(value: Any) -> Any:
    """Refuse what JSON does not call a number where a number is asked: pydantic's lax mode
    would read ``true`` as 1 (a variant's ``"model_version": true`` as version 1) and the
    string ``"3"`` as 3, which the OpenAPI document's ``integer`` and ``number`` do not allow."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, str | bytes):
        raise ValueError("must be a number, not a string")
    return value


def decimal_digits(value: Any) -> Any:
    """Refuse a URL's integer that is not written in decimal digits: pydantic's lax mode would
    read ``1_0`` as 10 (and ``+3``, `` 3 ``, ``3.0``), which the document's ``integer`` does not
    allow, so ``/v1/models/0_3/activate`` would activate version 3."""
    if isinstance(value, str) and not (value.isascii() and value.lstrip("-").isdigit()):
        raise ValueError("must be a whole number in decimal digits")
    return value


#: The number and integer of a request body (every numeric input field is one of them).
Number = Annotated[float, BeforeValidator(json_number)]
Integer = Annotated[int, BeforeValidator(json_number)]
#: A URL's integer is decimal digits only. A route's parameter puts this after its ``Query`` or
#: ``Path`` (``Annotated[int, Query(ge=1), DECIMAL_DIGITS]``): before it, FastAPI would publish
#: the bounds as "ge" and "le", which JSON Schema does not know. A model's field: UrlInteger.
DECIMAL_DIGITS = BeforeValidator(decimal_digits)
UrlInteger = Annotated[int, DECIMAL_DIGITS]
#: A share from 0 to 1. Its bounds come before the check: placed after it (or on an optional
#: field), pydantic publishes them as "ge" and "le", which JSON Schema does not know.
Share = Annotated[float, Field(ge=0, le=1), BeforeValidator(json_number)]


def _rfc3339_only(value: Any) -> Any:
    # Pydantic would also take numbers as Unix times; the contract says RFC 3339 text.
    # A string of digits too: Pydantic reads "1714564800" as a Unix time.
    if not isinstance(value, str | datetime) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2024-05-01T12:00:00Z")
    return value


def _is_number(text: str) -> bool:
    if ":" in text:  # no number has one, every RFC 3339 date-time does: skip the raise below
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sane_timestamp(value: datetime) -> datetime:
    # Only what the schema states; a time ahead of the server's clock is not refused here
    # (a bound that moves with the clock is one no schema can state): see ``event_time``.
    if value.tzinfo is None:
        raise ValueError("must carry a UTC offset (RFC 3339), e.g. 2024-05-01T12:00:00Z")
    # The year as written (a parsed date-time keeps its offset): TIMESTAMP_PATTERN's rule.
    if value.year < EARLIEST_TIMESTAMP.year:
        raise ValueError(f"is before {EARLIEST_TIMESTAMP.date()}, which no real event is")
    return value


def ahead_of_clock(written: datetime | None, received: datetime) -> bool:
    """Whether a written time is ahead of the server's clock (``received``) by more than
    ``MAX_CLOCK_SKEW``: a fast client clock."""
    return written is not None and written > received + MAX_CLOCK_SKEW


def event_time(written: datetime | None, received: datetime) -> datetime:
    """An event's time as stored: as written, or the time it was ``received`` when it has
    none or when it is ahead of the clock (refusing it would lose the event, and the
    client's batch with it)."""
    if written is None or ahead_of_clock(written, received):
        return received
    return written


Timestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339_only),
    AfterValidator(_sane_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
