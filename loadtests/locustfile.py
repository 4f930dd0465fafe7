"""Locust load test of the recsys public API: weighted visitor journeys, shapes, an SLO verdict.

``make loadtest`` (``run.py``) runs it; by hand, from the repository root:

    LOADTEST_SHAPE=steady .venv-loadtest/bin/locust -f loadtests/locustfile.py --headless \\
        --host http://127.0.0.1:8000 -u 20 -r 5 -t 60s \\
        --csv reports/locust --html reports/locust.html

Where each part lives (Locust puts this folder on ``sys.path``):

- ``journeys.py``: the visitor, one function per action and the weight table;
- ``population.py``: the MovieLens ids and the workloads (``--workload site|movielens``);
- ``fallbacks.py``: which strategy answered each list, merged from every worker;
- ``shapes.py`` and ``resilience.py``: the load shapes, ``LOADTEST_SHAPE`` picks one;
- ``verdict.py`` with ``slo.py``: the ``quitting`` listener that sets the exit code.
"""

from __future__ import annotations

import os

import locust.stats
import verdict  # noqa: F401  (registers the SLO options and the quitting listener)
from journeys import RecsysVisitor
from resilience import ResilienceShape
from shapes import RampShape, SizedShape, SpikeShape, SteadyShape

# Locust's charts and ``stats.history`` then carry the p99 too (the HTML report draws it, the
# resilience verdict times its spike by it), one point a second rather than one in five.
locust.stats.PERCENTILES_TO_CHART = [0.5, 0.95, 0.99]
locust.stats.HISTORY_STATS_INTERVAL_SEC = 1

SHAPES: dict[str, type[SizedShape] | None] = {
    "steady": SteadyShape,
    "ramp": RampShape,
    "spike": SpikeShape,
    "resilience": ResilienceShape,
    "none": None,
}


def _pick_shape(name: str) -> None:
    """Mark the chosen shape concrete: the one LoadTestShape Locust finds in this module."""
    if name not in SHAPES:
        raise SystemExit(f"LOADTEST_SHAPE={name!r}: choose one of {', '.join(SHAPES)}")
    if (shape := SHAPES[name]) is not None:
        shape.abstract = False


_pick_shape(os.environ.get("LOADTEST_SHAPE", "steady").strip().lower() or "steady")

__all__ = ["SHAPES", "RecsysVisitor"]
