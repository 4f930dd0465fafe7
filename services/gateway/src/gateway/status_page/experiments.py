"""The status page's experiments section: the running experiment's figures per variant, its
steps, and the latest ended experiments with their decision and reason.

Drawn from the reports ``GET /v1/experiments`` answers (``recsys_shared.experiments.report``),
so the page and the API cannot disagree. Rates are shown as percentages; differences between
rates in percentage points, with the always-valid 95% interval the decider uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.status_page import markup as ui
from recsys_shared.schemas import (
    Experiment,
    ExperimentStep,
    Interval,
    StoredExperiment,
    VariantReport,
)

MAX_STEPS = 10  # the running experiment's latest steps
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


@dataclass(frozen=True, slots=True)
class Shown:
    """An experiment as stored (its definition names every version, a shadow's too) and as
    the API reports it."""

    stored: StoredExperiment
    report: Experiment

    @property
    def versions(self) -> list[int]:
        return [variant.model_version for variant in self.stored.definition.variants]


def duration(seconds: float) -> str:
    """``seconds`` in its two largest units, zeros left out: ``6h``, ``2d 3h``, ``45s``."""
    rest = max(int(seconds), 0)
    counts: list[tuple[int, str]] = []
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        counts.append((count, unit))
    first = next((index for index, (count, _) in enumerate(counts) if count), len(counts))
    return " ".join(f"{count}{unit}" for count, unit in counts[first : first + 2] if count) or "0s"


def _percent(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "—"


def _points(value: float) -> str:
    return f"{value * 100:+.2f}"


def _rate(variant: VariantReport) -> str:
    if variant.rate is None:
        return "—"
    if variant.interval is None:
        return _percent(variant.rate)
    low, high = variant.interval.low, variant.interval.high
    return f"{variant.rate:.2%} ({low:.2%} to {high:.2%})"


def _difference(value: float | None, interval: Interval | None) -> str:
    if value is None:
        return "—"
    shown = f"{_points(value)} pts"
    if interval is not None:
        shown += f" ({_points(interval.low)} to {_points(interval.high)})"
    return shown


def _variant_rows(report: Experiment) -> list[list[str]]:
    return [
        [
            variant.name,
            str(variant.model_version),
            f"{variant.share:.0%}",
            str(variant.exposures),
            str(variant.events),
            str(variant.clicks),
            str(variant.conversions),
            _rate(variant),
            _difference(variant.difference, variant.difference_interval),
            variant.verdict or ("control" if index == 0 else "—"),
        ]
        for index, variant in enumerate(report.variants)
    ]


_VARIANT_HEADERS = [
    "variant",
    "version",
    "share",
    "exposures",
    "events",
    "clicks",
    "conversions",
    "rate (95% interval)",
    "difference vs control (always-valid 95%)",
    "verdict",
]


def _step_rows(steps: Sequence[ExperimentStep]) -> list[list[str]]:
    return [
        [ui.clock(step.at), " / ".join(f"{share:.0%}" for share in step.shares), step.note]
        for step in steps[-MAX_STEPS:]
    ]


def _running(shown: Shown, now: datetime) -> list[str]:
    report = shown.report
    age = (now - report.created_at).total_seconds()
    progress = age / report.max_duration_seconds
    cards = [
        ui.stat("running experiment", report.name, testid="stat-experiment-name"),
        ui.stat("id", report.id, testid="stat-experiment-id"),
        ui.stat("mode", report.mode.value, testid="stat-experiment-mode"),
        ui.stat("metric", report.metric.value, testid="stat-experiment-metric"),
        ui.stat(
            "running for, of its max duration",
            f"{duration(age)} of {duration(report.max_duration_seconds)} ({progress:.0%})",
            testid="stat-experiment-age",
        ),
        ui.stat("decision", report.decision.value, testid="stat-experiment-decision"),
        ui.stat(
            "min exposures per variant",
            str(report.min_exposures),
            testid="stat-experiment-min-exposures",
        ),
    ]
    shadow = report.shadow
    if shadow is not None:
        cards += [
            ui.stat("shadow version", str(shown.versions[1]), testid="stat-shadow-version"),
            ui.stat(
                "share of requests ranked",
                f"{shown.stored.state.shares[1]:.0%}",
                testid="stat-shadow-share",
            ),
            ui.stat("shadow rankings", str(shadow.rankings), testid="stat-shadow-rankings"),
            ui.stat("overlap with served", _percent(shadow.overlap), testid="stat-shadow-overlap"),
            ui.stat(
                f"shadow hit rate ({shadow.hits} of {shadow.events} events)",
                _percent(shadow.hit_rate),
                testid="stat-shadow-hit-rate",
            ),
        ]
    return [
        ui.stats(*cards),
        ui.table(_VARIANT_HEADERS, _variant_rows(report), testid="table-experiment-variants"),
        ui.table(
            ["at (UTC)", "shares", "step"],
            _step_rows(report.steps),
            testid="table-experiment-steps",
        ),
    ]


def _exposures(report: Experiment) -> str:
    counts = [str(variant.exposures) for variant in report.variants]
    if report.shadow is not None:
        counts.append(f"{report.shadow.rankings} ranked")
    return " / ".join(counts)


def _ended_rows(ended: Sequence[Shown]) -> list[list[str]]:
    return [
        [
            shown.report.id,
            shown.report.name,
            shown.report.mode.value,
            shown.report.metric.value,
            " vs ".join(str(version) for version in shown.versions),
            _exposures(shown.report),
            ui.clock(shown.report.created_at),
            ui.clock(shown.report.ended_at),
            shown.report.decision.value,
            shown.report.reason,
        ]
        for shown in ended
    ]


_ENDED_HEADERS = [
    "id",
    "name",
    "mode",
    "metric",
    "versions",
    "exposures",
    "started (UTC)",
    "ended (UTC)",
    "decision",
    "reason",
]


def section(running: Shown | None, ended: Sequence[Shown], *, now: datetime | None = None) -> str:
    """The running experiment (or a card saying there is none) and the latest ended ones."""
    if running is not None:
        content = _running(running, now or datetime.now(UTC))
    else:
        content = [ui.stats(ui.stat("running experiment", "none", testid="stat-experiment-name"))]
    content.append(ui.table(_ENDED_HEADERS, _ended_rows(ended), testid="table-experiments-ended"))
    return ui.section(
        "Experiments",
        *content,
        note="The running experiment as GET /v1/experiments reports it: per variant its "
        "traffic share, lists served (exposures), events carrying one of its lists' ids, "
        "clicks and purchases on a listed item, the metric with its 95% interval, and its "
        "difference from the control in percentage points with the always-valid 95% interval "
        "the decider reads (it may be checked any time). Then its latest steps, and the latest "
        "ended experiments, newest first.",
    )
