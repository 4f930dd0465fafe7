"""The wire contract: what the public API accepts and refuses, and how events are weighted."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from recsys_shared.schemas import (
    EARLIEST_INSTANT,
    EARLIEST_TIMESTAMP,
    EVENT_WEIGHTS,
    MAX_BATCH_EVENTS,
    MAX_CLOCK_SKEW,
    MAX_ID_LENGTH,
    MAX_K,
    MAX_OFFSET,
    MAX_WEIGHT,
    PATTERN_RULES,
    RATING_NEUTRAL,
    TIMESTAMP_PATTERN,
    EventBatch,
    EventIn,
    EventType,
    ItemBatch,
    ItemIn,
    RecommendationQuery,
    StoredEvent,
    ahead_of_clock,
    event_time,
    event_weight,
)


def _is_valid_identifier(text: str) -> bool:
    """The rule, written independently of the pattern that enforces it: no whitespace, no
    control character (C0, DEL, C1), no '/', no U+FFFD (what bytes that are not UTF-8 decode
    to)."""
    return 1 <= len(text) <= MAX_ID_LENGTH and not any(
        ch.isspace() or ch in "/\ufffd" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text
    )


def _accepted(payload: dict[str, Any]) -> bool:
    try:
        EventIn.model_validate(payload)
    except ValidationError:
        return False
    return True


def _error_fields(error: ValidationError) -> set[str]:
    return {".".join(str(part) for part in entry["loc"]) for entry in error.errors()}


# ── identifiers ───────────────────────────────────────────────────────────────────────────
_ID_CHARACTERS = st.characters(
    codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs", "Cc", "Cf")
)
_GOOD_ID_CHARACTERS = st.characters(codec="utf-8").filter(lambda ch: _is_valid_identifier(ch))


@given(st.text(alphabet=_GOOD_ID_CHARACTERS, min_size=1, max_size=MAX_ID_LENGTH))
def test_every_printable_identifier_without_whitespace_or_slash_is_accepted(text: str) -> None:
    event = EventIn.model_validate({"user_id": text, "item_id": text, "type": "view"})

    assert event.user_id == text
    assert event.item_id == text


@given(
    st.one_of(
        st.text(max_size=MAX_ID_LENGTH + 20),
        st.text(alphabet=_ID_CHARACTERS, max_size=MAX_ID_LENGTH + 20),
        st.text(alphabet=_GOOD_ID_CHARACTERS, min_size=MAX_ID_LENGTH + 1, max_size=200),
        st.builds(
            lambda head, bad, tail: head + bad + tail,
            st.text(alphabet=_GOOD_ID_CHARACTERS, max_size=10),
            st.sampled_from(
                ["/", " ", "\t", "\n", "\x00", "\x7f", "\u00a0", "\u2028", "\u3000", "\ufffd"]
            ),
            st.text(alphabet=_GOOD_ID_CHARACTERS, max_size=10),
        ),
    )
)
def test_identifier_is_accepted_exactly_when_it_follows_the_rules(text: str) -> None:
    expected = _is_valid_identifier(text)

    for field in ("user_id", "item_id", "event_id", "recommendation_id"):
        payload = {"user_id": "u", "item_id": "i", "type": "view", field: text}
        assert _accepted(payload) is expected, (field, text)


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "a b",
        "a/b",
        "/",
        "tab\there",
        "new\nline",
        "nul\x00",
        "caf\ufffd",
        "x" * (MAX_ID_LENGTH + 1),
    ],
)
def test_known_bad_identifiers_are_refused_with_the_field_named(bad_id: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate({"user_id": bad_id, "item_id": "i", "type": "view"})

    assert _error_fields(caught.value) == {"user_id"}


def test_identifiers_may_contain_colons_and_unicode() -> None:
    event = EventIn.model_validate({"user_id": "tenant:42", "item_id": "café-ß", "type": "view"})

    assert (event.user_id, event.item_id) == ("tenant:42", "café-ß")
    assert len(EventIn(user_id="x" * MAX_ID_LENGTH, item_id="i", type=EventType.VIEW).user_id) == (
        MAX_ID_LENGTH
    )


# ── patterns in words ─────────────────────────────────────────────────────────────────────
_PATTERN_TEXT = st.one_of(
    st.text(min_size=1, max_size=12),
    st.text(alphabet=_ID_CHARACTERS, min_size=1, max_size=12),
    st.text(alphabet=st.sampled_from("aZ09-/ \t\x00\x85\ufffd"), min_size=1, max_size=6),
)


@pytest.mark.parametrize("pattern", list(PATTERN_RULES), ids=lambda p: PATTERN_RULES[p].rule[:16])
@given(text=_PATTERN_TEXT)
def test_a_pattern_in_words_finds_a_breaking_character_exactly_when_the_pattern_refuses(
    pattern: str, text: str
) -> None:
    """A 422 names the first character ``breaks`` finds: it must find one in every string the
    enforced pattern (pydantic's Rust regex) refuses, and none in a string it accepts."""
    accepted = _follows(pattern, text)

    assert (re.search(PATTERN_RULES[pattern].breaks, text) is None) is accepted, text


def _follows(pattern: str, text: str) -> bool:
    try:
        TypeAdapter(Annotated[str, Field(pattern=pattern)]).validate_python(text)
    except ValidationError:
        return False
    return True


# ── types and values ──────────────────────────────────────────────────────────────────────
def test_unknown_event_type_is_refused(make_event: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate(make_event(type="hover"))

    assert _error_fields(caught.value) == {"type"}


@pytest.mark.parametrize("event_type", [member.value for member in EventType])
def test_every_event_type_is_accepted(make_event: Any, event_type: str) -> None:
    event = EventIn.model_validate(make_event(type=event_type, value=4.0))

    assert event.type is EventType(event_type)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_python_values_are_refused(make_event: Any, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate(make_event(type="rating", value=value))

    assert _error_fields(caught.value) == {"value"}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_values_are_refused(literal: str) -> None:
    raw = f'{{"user_id": "u", "item_id": "i", "type": "rating", "value": {literal}}}'

    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate_json(raw)

    assert _error_fields(caught.value) == {"value"}


def test_non_finite_value_inside_a_batch_is_refused() -> None:
    raw = (
        '{"events": [{"user_id": "u", "item_id": "i", "type": "view"},'
        ' {"user_id": "u", "item_id": "i", "type": "rating", "value": NaN}]}'
    )

    with pytest.raises(ValidationError) as caught:
        EventBatch.model_validate_json(raw)

    assert _error_fields(caught.value) == {"events.1.value"}


def test_rating_without_value_is_refused(make_event: Any) -> None:
    with pytest.raises(ValidationError, match="needs a 'value'"):
        EventIn.model_validate(make_event(type="rating"))


def test_rating_with_value_and_other_types_without_value_are_accepted(make_event: Any) -> None:
    assert EventIn.model_validate(make_event(type="rating", value=4.5)).value == 4.5
    assert EventIn.model_validate(make_event(type="purchase")).value is None


def test_unknown_fields_are_forbidden(make_event: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate(make_event(colour="red"))
    assert _error_fields(caught.value) == {"colour"}

    with pytest.raises(ValidationError) as caught:
        EventBatch.model_validate({"events": [make_event()], "dry_run": True})
    assert _error_fields(caught.value) == {"dry_run"}

    with pytest.raises(ValidationError) as caught:
        ItemIn.model_validate({"title": "t", "price": 3})
    assert _error_fields(caught.value) == {"price"}


# ── timestamps ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T07:30:00.250-04:30", datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_with_offset_are_accepted(
    make_event: Any, text: str, expected: datetime
) -> None:
    event = EventIn.model_validate(make_event(timestamp=text))

    assert event.timestamp == expected
    assert event.timestamp is not None
    assert event.timestamp.utcoffset() is not None


@pytest.mark.parametrize("number", [1714564800, 1714564800.5, 1714564800000])
def test_numeric_timestamps_are_refused_in_json_and_python(make_event: Any, number: float) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate_json(json.dumps(make_event(timestamp=number)))
    assert _error_fields(caught.value) == {"timestamp"}

    with pytest.raises(ValidationError):
        EventIn.model_validate(make_event(timestamp=number))


@pytest.mark.parametrize("text", ["1714564800", "1714564800.5", " 1714564800 "])
def test_numbers_written_as_strings_are_not_rfc3339(make_event: Any, text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate_json(json.dumps(make_event(timestamp=text)))

    assert _error_fields(caught.value) == {"timestamp"}


@pytest.mark.parametrize(
    "naive",
    ["2024-05-01T12:00:00", "2024-05-01", datetime(2024, 5, 1, 12)],
)
def test_timestamps_without_offset_are_refused(make_event: Any, naive: Any) -> None:
    with pytest.raises(ValidationError, match="UTC offset"):
        EventIn.model_validate(make_event(timestamp=naive))


def test_a_time_ahead_of_the_clock_beyond_the_skew_is_stored_as_the_time_of_receipt(
    make_event: Any,
) -> None:
    now = datetime.now(UTC)
    too_far = now + MAX_CLOCK_SKEW + timedelta(minutes=1)
    within = now + MAX_CLOCK_SKEW - timedelta(minutes=1)
    written = [too_far.isoformat(), too_far, "2999-01-01T00:00:00Z", within.isoformat(), None]
    events = [EventIn.model_validate(make_event(timestamp=time)) for time in written]

    stored = StoredEvent.from_inputs(events, now=now)

    # Accepted as written (the schema cannot bound it by the clock), corrected when stored.
    assert events[2].timestamp == datetime(2999, 1, 1, tzinfo=UTC)
    assert [event.ts for event in stored] == [now.timestamp()] * 3 + [
        within.timestamp(),
        now.timestamp(),
    ]
    assert [ahead_of_clock(event.timestamp, now) for event in events] == [True] * 3 + [False] * 2


def test_the_clock_check_compares_instants_not_wall_clock_text() -> None:
    now = datetime.now(UTC)
    # Ten minutes ahead in UTC, written in a zone whose wall clock reads hours behind.
    ahead = (now + timedelta(minutes=10)).astimezone(timezone(timedelta(hours=-8)))

    assert ahead_of_clock(ahead, now)
    assert event_time(ahead, now) == now


@pytest.mark.parametrize("text", ["1989-12-31T23:59:59Z", "1970-01-01T00:00:00Z"])
def test_timestamps_before_1990_are_refused(make_event: Any, text: str) -> None:
    with pytest.raises(ValidationError, match="before 1990"):
        EventIn.model_validate(make_event(timestamp=text))


def test_the_earliest_timestamp_itself_is_accepted(make_event: Any) -> None:
    event = EventIn.model_validate(make_event(timestamp="1990-01-01T00:00:00Z"))

    assert event.timestamp == EARLIEST_TIMESTAMP


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        # Written in 1990 at a positive offset: an instant of 1989 in UTC, yet accepted.
        ("1990-01-01T00:30:00+23:59", True),
        ("1989-12-31T23:30:00-05:00", False),
        ("2024-05-01T12:00:00Z", True),
        ("0001-01-01T00:00:00Z", False),
    ],
)
def test_the_earliest_bound_is_the_published_pattern(
    make_event: Any, text: str, accepted: bool
) -> None:
    # One rule for the OpenAPI document and the check: a client's validator never disagrees.
    assert bool(re.match(TIMESTAMP_PATTERN, text)) is accepted
    if accepted:
        parsed = EventIn.model_validate(make_event(timestamp=text)).timestamp
        assert parsed is not None
        assert parsed >= EARLIEST_INSTANT
    else:
        with pytest.raises(ValidationError, match="before 1990"):
            EventIn.model_validate(make_event(timestamp=text))


# ── batches ───────────────────────────────────────────────────────────────────────────────
def test_batch_size_limits(make_event: Any) -> None:
    with pytest.raises(ValidationError):
        EventBatch.model_validate({"events": []})
    with pytest.raises(ValidationError):
        EventBatch.model_validate({"events": [make_event()] * (MAX_BATCH_EVENTS + 1)})

    assert len(EventBatch.model_validate({"events": [make_event()]}).events) == 1
    full = EventBatch.model_validate({"events": [make_event()] * MAX_BATCH_EVENTS})
    assert len(full.events) == MAX_BATCH_EVENTS


def test_batch_errors_name_the_failing_event_index(make_event: Any) -> None:
    events = [make_event(), make_event(user_id="a b"), make_event(), make_event(type="nope")]

    with pytest.raises(ValidationError) as caught:
        EventBatch.model_validate({"events": events})

    assert _error_fields(caught.value) == {"events.1.user_id", "events.3.type"}


# ── event weights ─────────────────────────────────────────────────────────────────────────
_VALUES = st.none() | st.floats(allow_nan=False)


@given(st.sampled_from(list(EventType)), _VALUES)
def test_event_weight_is_bounded(event_type: EventType, value: float | None) -> None:
    assert -MAX_WEIGHT <= event_weight(event_type, value) <= MAX_WEIGHT


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
def test_rating_weight_is_signed_distance_from_neutral(value: float) -> None:
    weight = event_weight(EventType.RATING, value)

    assert weight == min(max(value - RATING_NEUTRAL, -MAX_WEIGHT), MAX_WEIGHT)
    # A low rating is negative evidence, not dropped: lower ratings weigh more against.
    if value < RATING_NEUTRAL:
        assert weight < 0.0
        assert event_weight(EventType.RATING, value - 0.5) <= weight


@given(st.sampled_from([t for t in EventType if t is not EventType.RATING]), _VALUES)
def test_non_rating_weight_ignores_value(event_type: EventType, value: float | None) -> None:
    assert event_weight(event_type, value) == EVENT_WEIGHTS[event_type] > 0


def test_rating_without_value_weighs_nothing() -> None:
    assert event_weight(EventType.RATING, None) == 0.0


def test_stored_event_carries_time_and_weight(make_event: Any) -> None:
    now = datetime(2024, 5, 2, tzinfo=UTC)
    dated = EventIn.model_validate(
        make_event(type="rating", value=5.0, timestamp="2024-05-01T00:00:00Z", event_id="e1")
    )
    undated = EventIn.model_validate(make_event(type="click"))

    stored, defaulted = StoredEvent.from_inputs([dated, undated], now=now)

    assert stored.ts == datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    assert stored.received_at == now.timestamp()
    assert stored.weight == 5.0 - RATING_NEUTRAL
    assert defaulted.ts == now.timestamp()
    assert defaulted.weight == EVENT_WEIGHTS[EventType.CLICK]
    assert stored.event_id == "e1"
    assert len(defaulted.event_id) == 32  # a fresh uuid4 when the client sent none


# ── catalogue ─────────────────────────────────────────────────────────────────────────────
def test_item_title_limits() -> None:
    assert ItemIn(title="t").title == "t"
    assert len(ItemIn(title="x" * 500).title) == 500
    for bad in ["", "x" * 501, "line\nbreak", "nul\x00"]:
        with pytest.raises(ValidationError):
            ItemIn(title=bad)


def test_item_category_limits() -> None:
    assert len(ItemIn(title="t", categories=[f"c{i}" for i in range(32)]).categories) == 32
    assert ItemIn(title="t", categories=["x" * 64]).categories == ["x" * 64]
    assert ItemIn(title="t").categories == []

    # Real catalogues' categories: spaces and punctuation are fine.
    for good in ["Science Fiction", "Home & Garden", "(no genres listed)", "a/b", "Ciné: été"]:
        assert ItemIn(title="t", categories=[good]).categories == [good]
    for bad in [
        [f"c{i}" for i in range(33)],
        ["x" * 65],
        [""],
        [" Drama"],
        ["Drama "],
        ["Sci\nFi"],
        ["\t"],
    ]:
        with pytest.raises(ValidationError):
            ItemIn(title="t", categories=bad)


def test_item_batch_requires_valid_item_ids() -> None:
    batch = ItemBatch.model_validate({"items": [{"item_id": "i:1", "title": "t"}]})
    assert batch.items[0].item_id == "i:1"

    with pytest.raises(ValidationError) as caught:
        ItemBatch.model_validate({"items": [{"item_id": "i/1", "title": "t"}]})
    assert _error_fields(caught.value) == {"items.0.item_id"}

    with pytest.raises(ValidationError):
        ItemBatch.model_validate({"items": []})


def test_item_batch_keeps_the_last_entry_of_an_item_listed_twice() -> None:
    batch = ItemBatch.model_validate(
        {
            "items": [
                {"item_id": id_, "title": title}
                for id_, title in [("a", "1"), ("b", "2"), ("a", "3")]
            ]
        }
    )
    assert [(item.item_id, item.title) for item in batch.items] == [("a", "3"), ("b", "2")]


# ── recommendation queries ────────────────────────────────────────────────────────────────
def test_recommendation_query_bounds() -> None:
    assert RecommendationQuery(k=1).k == 1
    assert RecommendationQuery(k=MAX_K).k == MAX_K
    assert RecommendationQuery(offset=0).offset == 0
    assert RecommendationQuery(offset=MAX_OFFSET).offset == MAX_OFFSET

    for bad in [{"k": 0}, {"k": MAX_K + 1}, {"offset": -1}, {"offset": MAX_OFFSET + 1}]:
        with pytest.raises(ValidationError) as caught:
            RecommendationQuery.model_validate(bad)
        assert _error_fields(caught.value) == set(bad)

    assert RecommendationQuery(category="Science Fiction").category == "Science Fiction"
    with pytest.raises(ValidationError):
        RecommendationQuery(category=" Drama")


#: Any valid query, categories with the characters keys join on included.
QUERIES = st.builds(
    RecommendationQuery,
    k=st.integers(1, MAX_K),
    offset=st.integers(0, MAX_OFFSET),
    exclude_seen=st.booleans(),
    category=st.none() | st.sampled_from(["a", "a:b", "k1:o0", "Drama"]),
)


@given(QUERIES, QUERIES)
def test_cache_fragment_tells_different_queries_apart(
    first: RecommendationQuery, second: RecommendationQuery
) -> None:
    assert (first.cache_fragment() == second.cache_fragment()) == (first == second)
