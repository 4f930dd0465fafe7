"""The pure part of the load-test report: Locust's CSV files in, an SLO verdict, a summary, a chart.

Importable without Locust (the project's main virtualenv tests it): only the standard library,
and matplotlib inside :func:`draw_chart` alone, which only the load-test virtualenv has.

Locust files read (written with ``--csv PREFIX --csv-full-history``):

- ``PREFIX_stats.csv``: one row per request name plus ``Aggregated``, over the whole run;
- ``PREFIX_stats_history.csv``: one row per name and per second; with ``--csv-full-history`` the
  percentiles there are over the last 10 seconds (Locust's "current" window), so they move with
  the load instead of being cumulative;
- ``PREFIX_journeys.json``: the locustfile's own statistic (strategies, status codes).
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGGREGATED = "Aggregated"
_SERVER_ERROR = re.compile(r"\bHTTP 5\d\d\b")

#: SLO defaults, measured on the reference machine (2 cores running the whole system and Locust,
#: ``docs/loadtesting.md``) with margin: a healthy run passes, a degraded one does not.
DEFAULT_FAILURE_RATIO = 0.01
DEFAULT_P95_MS = 250.0
DEFAULT_P99_MS = 500.0


# ── reading Locust's CSV ──────────────────────────────────────────────────────────────────
def _number(text: str | None) -> float:
    """Locust writes "N/A" for a percentile of nothing; that reads as NaN."""
    if text is None or text.strip() in {"", "N/A"}:
        return math.nan
    return float(text)


@dataclass(frozen=True)
class EndpointStats:
    """One row of ``PREFIX_stats.csv``; times in milliseconds."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    average_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> EndpointStats:
        return cls(
            method=row.get("Type", "") or "",
            name=row["Name"],
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            rps=_number(row["Requests/s"]),
            average_ms=_number(row["Average Response Time"]),
            max_ms=_number(row["Max Response Time"]),
            p50_ms=_number(row["50%"]),
            p95_ms=_number(row["95%"]),
            p99_ms=_number(row["99%"]),
        )


def read_stats(path: Path) -> list[EndpointStats]:
    with path.open(newline="", encoding="utf-8") as file:
        return [EndpointStats.from_row(row) for row in csv.DictReader(file)]


def aggregated(rows: Iterable[EndpointStats]) -> EndpointStats:
    for row in rows:
        if row.name == AGGREGATED:
            return row
    raise ValueError("the stats file has no Aggregated row")


@dataclass(frozen=True)
class HistoryPoint:
    """One second of ``PREFIX_stats_history.csv`` (the Aggregated row)."""

    timestamp: float
    users: int
    rps: float
    failures_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    total_requests: int
    total_failures: int


def read_history(path: Path, name: str = AGGREGATED) -> list[HistoryPoint]:
    """The time series of one request name (``Aggregated`` by default), oldest first."""
    points = []
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["Name"] != name:
                continue
            points.append(
                HistoryPoint(
                    timestamp=float(row["Timestamp"]),
                    users=int(row["User Count"]),
                    rps=_number(row["Requests/s"]),
                    failures_per_second=_number(row["Failures/s"]),
                    p50_ms=_number(row["50%"]),
                    p95_ms=_number(row["95%"]),
                    p99_ms=_number(row["99%"]),
                    total_requests=int(row["Total Request Count"]),
                    total_failures=int(row["Total Failure Count"]),
                )
            )
    points.sort(key=lambda point: point.timestamp)
    return points


def read_failures(path: Path) -> list[dict[str, str]]:
    """``PREFIX_failures.csv``: Method, Name, Error, Occurrences (absent file: none)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def read_journeys(path: Path) -> dict[str, dict[str, int]]:
    """The locustfile's custom statistic; empty when the file is absent."""
    if not path.exists():
        return {"lists": {}, "statuses": {}, "fallbacks_per_second": {}}
    data: dict[str, dict[str, int]] = json.loads(path.read_text(encoding="utf-8"))
    return data


# ── SLOs ──────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Slo:
    failure_ratio: float = DEFAULT_FAILURE_RATIO
    p95_ms: float = DEFAULT_P95_MS
    p99_ms: float = DEFAULT_P99_MS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Slo:
        """``SLO_FAILURE_RATIO``, ``SLO_P95_MS``, ``SLO_P99_MS``; unset or empty: the default."""

        def value(name: str, default: float) -> float:
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                number = float(text)
            except ValueError as error:
                raise ValueError(f"{name}={text!r} is not a number") from error
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name}={text!r} must be a finite number >= 0")
            return number

        return cls(
            failure_ratio=value("SLO_FAILURE_RATIO", DEFAULT_FAILURE_RATIO),
            p95_ms=value("SLO_P95_MS", DEFAULT_P95_MS),
            p99_ms=value("SLO_P99_MS", DEFAULT_P99_MS),
        )


@dataclass(frozen=True)
class SloResult:
    """One objective checked against a run: ``message`` says what was measured against what."""

    variable: str
    passed: bool
    message: str


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.2f} %"


def evaluate(total: EndpointStats, slo: Slo) -> list[SloResult]:
    """Check the Aggregated row against each objective. No request at all misses every one."""
    if total.requests == 0:
        message = "no request completed: nothing to measure, the run is not valid"
        return [
            SloResult(variable, False, message)
            for variable in ("SLO_FAILURE_RATIO", "SLO_P95_MS", "SLO_P99_MS")
        ]
    results = []
    ratio = total.failure_ratio
    counts = f"({total.failures} of {total.requests} requests)"
    if ratio <= slo.failure_ratio:
        results.append(
            SloResult(
                "SLO_FAILURE_RATIO",
                True,
                f"failure ratio {_percent(ratio)} {counts} is within {_percent(slo.failure_ratio)}",
            )
        )
    else:
        results.append(
            SloResult(
                "SLO_FAILURE_RATIO",
                False,
                f"failure ratio {_percent(ratio)} {counts} is over SLO_FAILURE_RATIO "
                f"{_percent(slo.failure_ratio)} by {(ratio - slo.failure_ratio) * 100:.2f} "
                "percentage points",
            )
        )
    for label, variable, measured, limit in (
        ("p95", "SLO_P95_MS", total.p95_ms, slo.p95_ms),
        ("p99", "SLO_P99_MS", total.p99_ms, slo.p99_ms),
    ):
        if math.isnan(measured):
            results.append(SloResult(variable, False, f"{label} latency was not measured"))
        elif measured <= limit:
            results.append(
                SloResult(
                    variable, True, f"{label} latency {measured:.0f} ms is within {limit:.0f} ms"
                )
            )
        else:
            over = measured - limit
            ratio = measured / limit if limit > 0 else math.inf
            factor = f", {ratio:.2f}x the limit" if ratio < 10 else f", {ratio:.0f}x the limit"
            results.append(
                SloResult(
                    variable,
                    False,
                    f"{label} latency {measured:.0f} ms is over {variable} {limit:.0f} ms "
                    f"by {over:.0f} ms{factor}",
                )
            )
    return results


def missed(results: Sequence[SloResult]) -> list[SloResult]:
    return [result for result in results if not result.passed]


# ── fallbacks and errors from the custom statistic ───────────────────────────────────────
@dataclass(frozen=True)
class Fallbacks:
    known_user_lists: int
    known_user_fallbacks: int
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.known_user_fallbacks / self.known_user_lists if self.known_user_lists else 0.0


def fallbacks(journeys: Mapping[str, Mapping[str, int]]) -> Fallbacks:
    """Known-user lists not ranked by the model, and every fallback reason seen (any kind)."""
    lists = journeys.get("lists", {})
    total = fallen = 0
    reasons: dict[str, int] = {}
    for key, count in lists.items():
        kind, _, outcome = key.partition("|")
        strategy, _, reason = outcome.partition("/")
        if kind == "known_user":
            total += count
            if strategy != "personalized":
                fallen += count
        if reason and reason != "-":
            reasons[f"{kind}/{reason}"] = reasons.get(f"{kind}/{reason}", 0) + count
    return Fallbacks(total, fallen, dict(sorted(reasons.items())))


def server_errors(
    journeys: Mapping[str, Mapping[str, int]], failures: Iterable[Mapping[str, str]]
) -> int:
    """Responses with a 5xx status: from the status counts when the locustfile wrote them,
    else from the failure messages ("HTTP 5xx ...")."""
    statuses = journeys.get("statuses", {})
    if statuses:
        return sum(count for status, count in statuses.items() if status.startswith("5"))
    return sum(
        int(row.get("Occurrences", 0) or 0)
        for row in failures
        if _SERVER_ERROR.search(row.get("Error", ""))
    )


# ── the p99 spike of a resilience run ─────────────────────────────────────────────────────
@dataclass(frozen=True)
class Spike:
    steady_p99_ms: float
    max_p99_ms: float

    @property
    def increase_ms(self) -> float:
        return self.max_p99_ms - self.steady_p99_ms

    @property
    def factor(self) -> float:
        return self.max_p99_ms / self.steady_p99_ms if self.steady_p99_ms else math.inf


def p99_spike(
    history: Sequence[HistoryPoint],
    steady: tuple[float, float],
    faults: tuple[float, float],
) -> Spike:
    """Median of the windowed p99 over ``steady`` against its maximum over ``faults``
    (both ``(start, end)`` in Unix seconds). Locust's window is 10 s wide, so a fault's effect
    shows until about 10 s after it ended: pass an end that includes that."""

    def values(start: float, end: float) -> list[float]:
        return [
            point.p99_ms
            for point in history
            if start <= point.timestamp <= end and not math.isnan(point.p99_ms)
        ]

    before = values(*steady)
    during = values(*faults)
    return Spike(
        steady_p99_ms=statistics.median(before) if before else math.nan,
        max_p99_ms=max(during) if during else math.nan,
    )


# ── the summary ───────────────────────────────────────────────────────────────────────────
def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def summary_table(rows: Sequence[EndpointStats]) -> str:
    """A fixed-width table: one line per endpoint, the Aggregated row last."""
    header = (
        f"{'method':<6} {'endpoint':<34} {'requests':>8} {'fails':>6} {'req/s':>7} "
        f"{'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}"
    )
    lines = [header, "-" * len(header)]
    ordered = sorted(rows, key=lambda row: (row.name == AGGREGATED, row.name, row.method))
    for row in ordered:
        if row.name == AGGREGATED:
            lines.append("-" * len(header))
        lines.append(
            f"{row.method:<6} {row.name[:34]:<34} {row.requests:>8} {row.failures:>6} "
            f"{row.rps:>7.1f} {_ms(row.p50_ms):>6} {_ms(row.p95_ms):>6} {_ms(row.p99_ms):>6} "
            f"{_ms(row.max_ms):>6}"
        )
    lines.append("(latencies in ms, percentiles over the whole run)")
    return "\n".join(lines)


def render_summary(
    rows: Sequence[EndpointStats],
    results: Sequence[SloResult],
    journeys: Mapping[str, Mapping[str, int]] | None = None,
    failures: Sequence[Mapping[str, str]] = (),
    notes: Sequence[str] = (),
) -> str:
    """The table, fallbacks, failures, ``notes``, then one line per SLO and the verdict last."""
    parts = [summary_table(rows), ""]
    if journeys is not None:
        seen = fallbacks(journeys)
        parts.append(
            f"known-user lists not personalised (fallbacks): {seen.known_user_fallbacks} of "
            f"{seen.known_user_lists} ({_percent(seen.ratio)})"
        )
        for key, count in seen.by_reason.items():
            kind, _, reason = key.partition("/")
            parts.append(f"  {kind} lists with fallback_reason {reason}: {count}")
        parts.append(f"5xx responses: {server_errors(journeys, failures)}")
    for row in failures:
        parts.append(
            f"failure: {row.get('Method', '')} {row.get('Name', '')}: {row.get('Error', '')} "
            f"x{row.get('Occurrences', '?')}"
        )
    parts.extend(notes)
    parts.append("")
    for result in results:
        parts.append(f"{'PASS' if result.passed else 'FAIL'} {result.variable}: {result.message}")
    bad = missed(results)
    if bad:
        parts.append(f"SLO MISSED: {'; '.join(result.message for result in bad)}")
    else:
        parts.append("all SLOs met")
    return "\n".join(parts)


# ── the chart ─────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class ChartSeries:
    """What the chart draws, in seconds since the first point."""

    seconds: list[float]
    users: list[int]
    rps: list[float]
    failures_per_second: list[float]
    p50_ms: list[float]
    p95_ms: list[float]
    p99_ms: list[float]
    start: float


def chart_series(history: Sequence[HistoryPoint]) -> ChartSeries:
    if not history:
        raise ValueError("no history to chart")
    start = history[0].timestamp
    return ChartSeries(
        seconds=[point.timestamp - start for point in history],
        users=[point.users for point in history],
        rps=[point.rps for point in history],
        failures_per_second=[point.failures_per_second for point in history],
        p50_ms=[point.p50_ms for point in history],
        p95_ms=[point.p95_ms for point in history],
        p99_ms=[point.p99_ms for point in history],
        start=start,
    )


def draw_chart(
    series: ChartSeries,
    path: Path,
    *,
    title: str,
    marks: Sequence[tuple[str, float, float]] = (),
) -> Path:
    """Throughput (and failures) above, p50/p95/p99 below, as a small PNG.

    ``marks``: ``(label, start, end)`` in Unix seconds, shaded on both panels (faults).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]}
    )
    top.plot(series.seconds, series.rps, color="tab:blue", label="requests/s")
    top.plot(series.seconds, series.failures_per_second, color="tab:red", label="failures/s")
    top.set_ylabel("requests/s")
    top.set_ylim(bottom=0)
    users_axis = top.twinx()
    users_axis.plot(series.seconds, series.users, color="0.6", linestyle="--", label="users")
    users_axis.set_ylabel("users")
    users_axis.set_ylim(bottom=0)
    lines = top.get_lines() + users_axis.get_lines()
    top.legend(lines, [line.get_label() for line in lines], loc="upper left", fontsize=8)
    top.set_title(title, fontsize=10)

    for values, label, colour in (
        (series.p50_ms, "p50", "tab:green"),
        (series.p95_ms, "p95", "tab:orange"),
        (series.p99_ms, "p99", "tab:red"),
    ):
        bottom.plot(series.seconds, values, label=label, color=colour)
    bottom.set_ylabel("latency, ms (10 s window)")
    bottom.set_xlabel("seconds since start")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize=8)
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    for label, start, end in marks:
        for axis in (top, bottom):
            axis.axvspan(start - series.start, end - series.start, color="0.85", zorder=0)
        bottom.annotate(
            label,
            xy=(start - series.start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=8,
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def load_run(prefix: Path) -> dict[str, Any]:
    """Everything a run left under ``prefix``: stats, history, failures, journeys."""
    return {
        "stats": read_stats(Path(f"{prefix}_stats.csv")),
        "history": read_history(Path(f"{prefix}_stats_history.csv")),
        "failures": read_failures(Path(f"{prefix}_failures.csv")),
        "journeys": read_journeys(Path(f"{prefix}_journeys.json")),
    }
