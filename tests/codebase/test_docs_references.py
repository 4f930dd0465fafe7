"""The tests docs/failure-modes.md names as the proof of each answer exist: every
``path.py`` and ``path.py::test_name`` (and a following ``::test_name``, of the same file)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAILURE_MODES = ROOT / "docs" / "failure-modes.md"
#: A test file, a test of it, or (``::name``) another test of the file named before.
REFERENCE = re.compile(r"`(?:((?:services|tests|shared)/[\w/.-]+\.py)|)(?:::(\w+))?`")


def _references(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    current: str | None = None
    for path, test in REFERENCE.findall(text):
        if path:
            current = path
        if current is not None and (path or test):
            found.append((current, test or None))
    return found


def test_every_test_the_failure_modes_name_exists() -> None:
    references = _references(FAILURE_MODES.read_text())
    assert len(references) > 40, "the pattern found too few references"
    missing = []
    for path, test in references:
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif test and not re.search(rf"^(async )?def {test}\(", source.read_text(), re.M):
            missing.append(f"{path}::{test}")
    assert missing == []


def test_a_test_named_after_its_file_is_of_that_file() -> None:
    text = "`tests/a.py::test_one`, `::test_two`, `shared/b.py` and `::test_three`"
    assert _references(text) == [
        ("tests/a.py", "test_one"),
        ("tests/a.py", "test_two"),
        ("shared/b.py", None),
        ("shared/b.py", "test_three"),
    ]
