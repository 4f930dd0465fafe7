"""The SLOs, checked against Locust's own in-memory statistics (``environment.stats``).

Each check names its objective, what was measured, the limit and, when missed, by how much:
``p99 latency 45 ms is over SLO_P99_MS 1 ms by 44 ms, 45x the limit``. A check is *gated* when a
miss fails the run, else it is only reported. Pure functions of Locust's ``RequestStats`` (its
``total`` entry, per-endpoint ``entries``, ``errors`` and ``history``): nothing here starts,
reads a file or imports Locust at run time.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from locust.stats import RequestStats, StatsEntry

#: A failure message of a 5xx response (``journeys.SERVER_ERROR``), in Locust's error table.
_SERVER_ERROR = re.compile(r"\bHTTP 5\d\d \(server error\)")
#: The percentile key of ``RequestStats.history`` entries (``PERCENTILES_TO_CHART`` has 0.99).
P99_HISTORY_KEY = "response_time_percentile_0.99"


@dataclass(frozen=True)
class Limits:
    """The objectives, each settable as a Locust option and its variable (``SLO_P99_MS``…).

    Defaults measured on the reference machine with margin (``docs/loadtesting.md``): a healthy
    run passes on a shared 2-core machine, a saturated or degraded one does not.
    """

    failure_ratio: float = 0.01
    p95_ms: float = 250.0
    p99_ms: float = 500.0
    fallback_ratio: float = 0.05


@dataclass(frozen=True)
class Check:
    """One objective against one run: ``message`` says what was measured against what."""

    name: str
    passed: bool
    message: str
    gated: bool = True


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.2f} %"


def _endpoint(entry: StatsEntry) -> str:
    return f"{entry.method} {entry.name}"


def failure_ratio(stats: RequestStats, limit: float) -> Check:
    """Failed requests over all requests; a miss names the endpoint that failed most."""
    total = stats.total
    ratio = total.fail_ratio
    counts = f"({total.num_failures} of {total.num_requests} requests)"
    if ratio <= limit:
        return Check(
            "SLO_FAILURE_RATIO",
            True,
            f"failure ratio {_percent(ratio)} {counts} is within {_percent(limit)}",
        )
    worst = max(stats.entries.values(), key=lambda entry: entry.num_failures)
    return Check(
        "SLO_FAILURE_RATIO",
        False,
        f"failure ratio {_percent(ratio)} {counts} is over SLO_FAILURE_RATIO {_percent(limit)} "
        f"by {(ratio - limit) * 100:.2f} percentage points (most failures: "
        f"{_endpoint(worst)}, {worst.num_failures})",
    )


def latency(stats: RequestStats, percentile: float, limit_ms: float) -> Check:
    """A whole-run percentile of every request; a miss names the slowest endpoint at it."""
    label = f"p{percentile * 100:g}"
    name = f"SLO_{label.upper()}_MS"
    measured = stats.total.get_response_time_percentile(percentile)
    if measured <= limit_ms:
        return Check(name, True, f"{label} latency {measured:.0f} ms is within {limit_ms:.0f} ms")
    factor = measured / limit_ms if limit_ms > 0 else math.inf
    times = f"{factor:.2f}x" if factor < 10 else f"{factor:.0f}x"
    slowest = max(
        (entry for entry in stats.entries.values() if entry.num_requests),
        key=lambda entry: entry.get_response_time_percentile(percentile),
    )
    return Check(
        name,
        False,
        f"{label} latency {measured:.0f} ms is over {name} {limit_ms:.0f} ms by "
        f"{measured - limit_ms:.0f} ms, {times} the limit (slowest: {_endpoint(slowest)}, "
        f"{label} {slowest.get_response_time_percentile(percentile):.0f} ms)",
    )


def fallback_ratio(fallen: int, lists: int, limit: float) -> Check:
    """Known-user lists answered by a fallback instead of the model."""
    ratio = fallen / lists if lists else 0.0
    measured = f"known-user lists not personalised {_percent(ratio)} ({fallen} of {lists})"
    if ratio <= limit:
        return Check("SLO_FALLBACK_RATIO", True, f"{measured} is within {_percent(limit)}")
    return Check(
        "SLO_FALLBACK_RATIO",
        False,
        f"{measured} is over SLO_FALLBACK_RATIO {_percent(limit)} by "
        f"{(ratio - limit) * 100:.2f} percentage points",
    )


def server_errors(stats: RequestStats) -> int:
    """Responses with a 5xx status, from Locust's error table (merged from every worker)."""
    return sum(
        error.occurrences
        for error in stats.errors.values()
        if _SERVER_ERROR.search(str(error.error))
    )


def no_server_errors(stats: RequestStats) -> Check:
    count = server_errors(stats)
    return Check("5xx", count == 0, f"{count} responses with a 5xx status")


def load_checks(stats: RequestStats, limits: Limits, fallen: int, lists: int) -> list[Check]:
    """The load test's objectives. A run without a single request misses every one."""
    if stats.total.num_requests == 0:
        message = "no request completed: nothing to measure, the run is not valid"
        names = ("SLO_FAILURE_RATIO", "SLO_P95_MS", "SLO_P99_MS", "SLO_FALLBACK_RATIO")
        return [Check(name, False, message) for name in names]
    return [
        failure_ratio(stats, limits.failure_ratio),
        latency(stats, 0.95, limits.p95_ms),
        latency(stats, 0.99, limits.p99_ms),
        fallback_ratio(fallen, lists, limits.fallback_ratio),
        replace(no_server_errors(stats), gated=False),
    ]


# ── the p99 spike of a resilience run ─────────────────────────────────────────────────────
@dataclass(frozen=True)
class Spike:
    """The windowed p99 before the faults (median) and during them (maximum), in ms."""

    steady_p99_ms: float
    max_p99_ms: float

    @property
    def increase_ms(self) -> float:
        return self.max_p99_ms - self.steady_p99_ms

    @property
    def factor(self) -> float:
        return self.max_p99_ms / self.steady_p99_ms if self.steady_p99_ms else math.inf


def p99_series(history: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(Unix second, p99 of the last 10 s) of each ``RequestStats.history`` entry."""
    series = []
    for entry in history:
        if P99_HISTORY_KEY not in entry:
            continue
        second = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        series.append((second, float(entry[P99_HISTORY_KEY][1])))
    return series


def p99_spike(
    series: Sequence[tuple[float, float]],
    steady: tuple[float, float],
    faults: tuple[float, float],
) -> Spike:
    """Median of the windowed p99 over ``steady`` against its maximum over ``faults``, both
    ``(start, end)`` in Unix seconds. Locust's window is 10 s wide, so a fault shows until
    about 10 s after it ended: pass an end that includes that. No data: NaN."""

    def values(start: float, end: float) -> list[float]:
        return [p99 for second, p99 in series if start <= second <= end and p99 > 0]

    before, during = values(*steady), values(*faults)
    return Spike(
        steady_p99_ms=statistics.median(before) if before else math.nan,
        max_p99_ms=max(during) if during else math.nan,
    )


# ── the verdict ───────────────────────────────────────────────────────────────────────────
def missed(checks: Iterable[Check]) -> list[Check]:
    """The gated checks that failed: any of them fails the run."""
    return [check for check in checks if check.gated and not check.passed]


def render(checks: Sequence[Check], notes: Sequence[str] = ()) -> str:
    """One line per check (``info`` when only reported), ``notes``, then the verdict last."""
    lines = []
    for check in checks:
        status = ("PASS" if check.passed else "FAIL") if check.gated else "info"
        lines.append(f"{status} {check.name}: {check.message}")
    lines.extend(notes)
    bad = missed(checks)
    lines.append(
        f"SLO MISSED: {'; '.join(check.message for check in bad)}" if bad else "all SLOs met"
    )
    return "\n".join(lines)
