"""Structured logs: one JSON object per record, stamped with the request id."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from recsys_shared.logging import JsonFormatter, TextFormatter, new_request_id, request_id_var


@pytest.fixture
def request_id() -> Iterator[str]:
    value = "req-0123456789"
    token = request_id_var.set(value)
    yield value
    request_id_var.reset(token)


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.getLogger("recsys.test").makeRecord(
        "recsys.test", logging.WARNING, __file__, 10, message, args, None, extra=extra
    )


def test_json_line_carries_request_id_and_extra_fields(request_id: str) -> None:
    record = _record("applied %d events", 3, user_id="u:1", duration_ms=12.5)

    line = JsonFormatter("gateway").format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["request_id"] == request_id
    assert entry["message"] == "applied 3 events"
    assert entry["service"] == "gateway"
    assert entry["logger"] == "recsys.test"
    assert entry["level"] == "warning"
    assert entry["user_id"] == "u:1"
    assert entry["duration_ms"] == 12.5
    assert entry["time"].endswith("+00:00")
    # Standard LogRecord attributes are not repeated as fields.
    assert not {"args", "msg", "levelno", "pathname", "lineno"} & set(entry)


def test_json_line_without_request_id_omits_it() -> None:
    token = request_id_var.set(None)
    try:
        entry = json.loads(JsonFormatter("worker").format(_record("idle")))
    finally:
        request_id_var.reset(token)

    assert "request_id" not in entry
    assert entry["message"] == "idle"


def test_json_line_keeps_multiline_text_and_exceptions_on_one_line(request_id: str) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("recsys.test").makeRecord(
            "recsys.test", logging.ERROR, __file__, 1, "two\nlines", (), sys.exc_info()
        )

    line = JsonFormatter("svc").format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "two\nlines"
    assert "RuntimeError: boom" in entry["exception"]


def test_values_json_cannot_encode_are_written_as_text(request_id: str) -> None:
    entry = json.loads(JsonFormatter("svc").format(_record("x", path=PurePosixPath("/a/b"))))

    assert entry["path"] == "/a/b"


def test_text_formatter_prefixes_the_request_id(request_id: str) -> None:
    line = TextFormatter().format(_record("hello"))

    assert line == f"WARNING recsys.test: [{request_id[:8]}] hello"


def test_new_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(100)}

    assert len(ids) == 100
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in ids)
