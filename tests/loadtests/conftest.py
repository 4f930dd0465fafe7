"""Import the load test's modules as Locust does: from ``loadtests/`` on ``sys.path``.

Locust patches the standard library with gevent when it is imported, to run thousands of
visitors in one process. These tests only build its statistics objects, and the rest of the
suite runs in the same process, so the patching is skipped (Locust's own switch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
LOADTESTS = HERE.parents[1] / "loadtests"

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
for folder in (LOADTESTS, HERE):  # the load test's modules; locust_runs.py beside this file
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The clock Locust's statistics see, moved by the test; history carries the p99."""
    import locust.stats
    from locust_runs import Clock

    fake = Clock()
    monkeypatch.setattr(locust.stats, "time", fake)
    monkeypatch.setattr(locust.stats, "PERCENTILES_TO_CHART", [0.5, 0.95, 0.99])
    return fake


@pytest.fixture(autouse=True)
def _no_outcomes_left() -> Iterator[None]:
    """The journeys' list counts are process-wide, as in Locust: each test starts empty."""
    from fallbacks import OUTCOMES

    OUTCOMES.drain()
    yield
    OUTCOMES.drain()
