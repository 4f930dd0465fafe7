"""The status page's sections, from the data the route gathers: numbers first, a sparkline
beside each number that has a recent history, tables where there are rows to compare."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.status_page import markup as ui
from gateway.status_page.metrics import PERCENTILES, ProcessMetrics
from recsys_shared.schemas import (
    THROUGHPUT_WINDOW_SECONDS,
    DriftReport,
    ModelInfo,
    ModelStatus,
    PipelineStatus,
    metric_name,
)

#: The cut-off of versions recorded before the registry kept it (the worker's default).
DEFAULT_K = 10
MAX_ROUTES = 10  # busiest routes in the latency table


def _number(value: float | None, pattern: str = "{:.3f}") -> str:
    return pattern.format(value) if value is not None else "—"


def _k(info: ModelInfo | None) -> int:
    return (info.evaluation_k if info is not None else None) or DEFAULT_K


def _precision(info: ModelInfo | None, *, baseline: bool = False) -> float | None:
    """The version's precision at its own cut-off (or its baseline's)."""
    if info is None:
        return None
    scores = info.baseline_metrics if baseline else info.metrics
    return scores.get(metric_name("precision", _k(info)))


def models(versions: list[ModelInfo]) -> str:
    """Every version listed (newest first) with the active one's precision beside the
    baseline's, and both per version as sparklines (oldest first)."""
    active = next((info for info in versions if info.status is ModelStatus.ACTIVE), None)
    oldest_first = list(reversed(versions))
    precision_at = f"precision@{_k(active)}"
    model_trend = ui.sparkline(
        [_precision(info) for info in oldest_first],
        testid="spark-model-precision",
        label=f"{precision_at} per version",
    )
    baseline_trend = ui.sparkline(
        [_precision(info, baseline=True) for info in oldest_first],
        testid="spark-baseline-precision",
        label=f"baseline {precision_at} per version",
    )
    rows = [
        [
            str(info.version),
            info.status.value,
            info.status_reason or "",
            str(info.algorithm),
            ui.clock(info.created_at),
            f"{_number(_precision(info))} vs {_number(_precision(info, baseline=True))}",
            info.snapshot_id,
        ]
        for info in versions
    ]
    headers = [
        "version",
        "status",
        "reason",
        "algorithm",
        "created (UTC)",
        f"{precision_at} vs baseline",
        "snapshot",
    ]
    return ui.section(
        "Model versions",
        ui.stats(
            ui.stat(
                "active version",
                str(active.version) if active else "none",
                testid="stat-active-version",
            ),
            ui.stat(
                f"{precision_at} (active)",
                _number(_precision(active)),
                testid="stat-active-precision",
                trend=model_trend,
            ),
            ui.stat(
                "popularity baseline",
                _number(_precision(active, baseline=True)),
                testid="stat-baseline-precision",
                trend=baseline_trend,
            ),
        ),
        ui.table(headers, rows, testid="table-models"),
        note="Newest first. Precision at the evaluation cut-off (EVALUATION_K) on the "
        "time-ordered holdout, beside the popularity baseline on the same holdout: the gate "
        "publishes a version only when it beats it. "
        "The lines run over the listed versions, oldest first.",
    )


def _overall_hit_rate(report: DriftReport) -> float | None:
    events = sum(rate.events for rate in report.hit_rate.values())
    hits = sum(rate.hits for rate in report.hit_rate.values())
    return hits / events if events else None


def drift(history: list[DriftReport]) -> str:
    """The latest drift check's numbers, with PSI and hit rate over the checks kept."""
    oldest_first = sorted(history, key=lambda report: report.checked_at)
    latest = oldest_first[-1] if oldest_first else None
    hit_rates = [_overall_hit_rate(report) for report in oldest_first]
    cards = [
        ui.stat("checks kept", str(len(history)), testid="stat-drift-checks"),
        ui.stat("latest status", latest.status if latest else "—", testid="stat-drift-status"),
        ui.stat(
            "PSI of item popularity",
            _number(latest.psi if latest else None),
            testid="stat-drift-psi",
            trend=ui.sparkline(
                [report.psi for report in oldest_first], testid="spark-drift-psi", label="PSI"
            ),
        ),
        ui.stat(
            "online hit rate",
            _number(hit_rates[-1] if hit_rates else None, "{:.1%}"),
            testid="stat-hit-rate",
            trend=ui.sparkline(hit_rates, testid="spark-hit-rate", label="online hit rate"),
        ),
    ]
    if latest and latest.reasons:
        cards.append(ui.stat("why", "; ".join(latest.reasons), testid="stat-drift-reasons"))
    checked = f" Latest check {ui.clock(latest.checked_at)} UTC." if latest else ""
    return ui.section(
        "Drift and online hit rate",
        ui.stats(*cards),
        note="One value per drift check of the retraining-worker (its recent window against "
        "the active model's training data), oldest first. Hit rate: events on an item of a "
        "recommendation they carry the id of, over all versions serving in the window." + checked,
    )


def ingestion(pipeline: PipelineStatus) -> str:
    """Throughput over the last minute, second by second, and the backlog's numbers."""
    accepted = [float(point.accepted) for point in pipeline.throughput]
    applied = [float(point.applied) for point in pipeline.throughput]
    cards = [
        ui.stat(
            "accepted / s (mean)",
            f"{pipeline.accepted_per_second:.1f}",
            testid="stat-accepted",
            trend=ui.sparkline(accepted, testid="spark-accepted", label="accepted per second"),
        ),
        ui.stat(
            "applied / s (mean)",
            f"{pipeline.applied_per_second:.1f}",
            testid="stat-applied",
            trend=ui.sparkline(applied, testid="spark-applied", label="applied per second"),
        ),
        ui.stat("consumer lag (events)", str(pipeline.consumer_lag), testid="stat-lag"),
        ui.stat("pending (unacked)", str(pipeline.pending), testid="stat-pending"),
        ui.stat("dead letters", str(pipeline.dead_letters), testid="stat-dead-letters"),
        ui.stat("stream length", str(pipeline.stream_length), testid="stat-stream"),
    ]
    snapshot = pipeline.last_snapshot
    if snapshot is not None:
        cards.append(ui.stat("last snapshot", ui.clock(snapshot.created_at), testid="stat-snap"))
    return ui.section(
        "Ingestion",
        ui.stats(*cards),
        note=f"Lines: events per second over the last {THROUGHPUT_WINDOW_SECONDS} s. "
        "Accepted: taken in by any gateway replica. Applied: written to the features by the "
        "feature-store's consumers. Lag: events accepted and not yet applied (pending ones "
        "included).",
    )


def serving(process: ProcessMetrics) -> str:
    """This process's cache lookups and the latency percentiles of its busiest routes."""
    ratio = process.cache_hit_ratio
    lookups = [
        ui.stat(f"cache {result}", str(count), testid=f"stat-cache-{result}")
        for result, count in sorted(process.cache.items())
    ]
    rows = [
        [
            f"{entry.method} {entry.route}",
            str(entry.count),
            *(
                _number(None if value is None else value * 1000, "{:.1f}")
                for value in (entry.percentiles[q] for q in PERCENTILES)
            ),
        ]
        for entry in process.latency[:MAX_ROUTES]
    ]
    headers = ["route", "requests", *(f"p{round(q * 100)} (ms)" for q in PERCENTILES)]
    return ui.section(
        "Serving (this gateway process)",
        ui.stats(
            ui.stat(
                "cache hit ratio",
                f"{ratio:.1%}" if ratio is not None else "no lookups yet",
                testid="stat-cache-hit-ratio",
            ),
            ui.stat(
                "requests measured",
                str(sum(entry.count for entry in process.latency)),
                testid="stat-requests",
            ),
            *lookups,
        ),
        ui.table(headers, rows, testid="table-latency"),
        note="From this gateway process's own Prometheus metrics since it started (other "
        "replicas keep their own): recsys_cache_requests_total, and percentiles interpolated "
        "from the buckets of http_request_duration_seconds. Busiest routes first.",
    )


def subtitle(version: str) -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC · gateway {version} · reload to refresh"
