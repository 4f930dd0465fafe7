"""The operator status page (admin): the system at a glance, as HTML a browser opens.

A person opens it by navigating to it, and a browser sends no ``X-API-Key`` header on
navigation, so this route alone also takes the key as ``?key=`` (see
``gateway.auth.require_admin_in_browser``); the key must still have the admin role. The page is
rendered on the server with inline SVG charts (``gateway.status_page``): no script runs and
nothing is loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from gateway import status_page as ui
from gateway.auth import BrowserAdminAuth
from gateway.deps import RedisDep, RegistryDep, SettingsDep
from gateway.errors import PROBLEM_RESPONSES
from gateway.routes.drift import read_drift
from gateway.routes.pipeline import THROUGHPUT_WINDOW_SECONDS, PipelineStatus, read_pipeline_status
from recsys_shared import code_version, keys
from recsys_shared.schemas import DriftReport, ModelInfo

router = APIRouter(prefix="/v1", tags=["status"], dependencies=[BrowserAdminAuth])

PRECISION = "precision_at_10"
MAX_VERSIONS = 20  # newest versions drawn and listed
MAX_ROUTES = 10  # busiest routes in the latency chart
# The page holds no secret but its URL may hold the key: never store it, never refer it on.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
}


@router.get(
    "/status",
    response_class=HTMLResponse,
    summary="Status page for operators: models, drift, ingestion, cache, latency (HTML)",
    description="Open it in a browser as `/v1/status?key=<admin key>`; the `key` query "
    "parameter is accepted on this route only, because a browser sends no header when a "
    "person navigates to a page.",
    responses=PROBLEM_RESPONSES,
)
async def status_page(
    redis: RedisDep, registry: RegistryDep, settings: SettingsDep
) -> HTMLResponse:
    versions, drift, pipeline = await asyncio.gather(
        registry.list(),
        read_drift(redis, keys.DRIFT_HISTORY_LENGTH),
        read_pipeline_status(redis, settings.partitions),
    )
    process = ui.read_process_metrics()
    now = datetime.now(UTC)
    html = ui.page(
        title="recsys status",
        subtitle=f"{now:%Y-%m-%d %H:%M:%S} UTC · gateway {code_version()} · reload to refresh",
        sections=[
            _models_section(versions[:MAX_VERSIONS]),
            _drift_section(drift.history),
            _ingestion_section(pipeline),
            _serving_section(process),
        ],
    )
    return HTMLResponse(html, headers=_HEADERS)


def _metric(metrics: dict[str, float]) -> str:
    value = metrics.get(PRECISION)
    return f"{value:.3f}" if value is not None else "—"


def _models_section(versions: list[ModelInfo]) -> str:
    rows = [
        [
            str(info.version),
            info.status.value,
            info.status_reason or "",
            str(info.algorithm),
            ui.clock(info.created_at),
            f"{_metric(info.metrics)} vs {_metric(info.baseline_metrics)}",
            info.snapshot_id,
        ]
        for info in versions
    ]
    oldest_first = list(reversed(versions))
    chart = ui.bar_chart(
        [f"v{info.version}" for info in oldest_first],
        {
            "model": [info.metrics.get(PRECISION) for info in oldest_first],
            "popularity baseline": [info.baseline_metrics.get(PRECISION) for info in oldest_first],
        },
        title="Offline precision@10 per model version",
        x_label="model version",
        y_label="precision@10",
        testid="chart-model-precision",
        value_format=lambda value: f"{value:.3f}",
    )
    return ui.section(
        "Model versions",
        '<div class="row"><div class="grow">',
        ui.table(
            [
                "version",
                "status",
                "reason",
                "algorithm",
                "created (UTC)",
                "precision@10 vs baseline",
                "snapshot",
            ],
            rows,
            testid="table-models",
        ),
        "</div>",
        chart,
        "</div>",
        note="Newest first. Precision@10 on the time-ordered holdout, beside the popularity "
        "baseline on the same holdout: the gate publishes a version only when it beats it.",
    )


def _overall_hit_rate(report: DriftReport) -> float | None:
    events = sum(rate.events for rate in report.hit_rate.values())
    hits = sum(rate.hits for rate in report.hit_rate.values())
    return hits / events if events else None


def _drift_section(history: list[DriftReport]) -> str:
    oldest_first = sorted(history, key=lambda report: report.checked_at)
    psi = [
        (report.checked_at.timestamp(), report.psi)
        for report in oldest_first
        if report.psi is not None
    ]
    hit_rate = [
        (report.checked_at.timestamp(), rate)
        for report in oldest_first
        if (rate := _overall_hit_rate(report)) is not None
    ]

    def when(stamp: float) -> str:
        return datetime.fromtimestamp(stamp, UTC).strftime("%m-%d %H:%M")

    latest = oldest_first[-1] if oldest_first else None
    stats = [
        ui.stat("checks kept", str(len(history)), testid="stat-drift-checks"),
        ui.stat("latest status", latest.status if latest else "—", testid="stat-drift-status"),
    ]
    if latest and latest.reasons:
        stats.append(ui.stat("why", "; ".join(latest.reasons), testid="stat-drift-reasons"))
    return ui.section(
        "Drift and online hit rate",
        f'<div class="stats">{"".join(stats)}</div>',
        '<div class="row">',
        ui.line_chart(
            {"PSI of item popularity": psi},
            title="Drift: PSI per check",
            x_label="check time (UTC)",
            y_label="PSI",
            testid="chart-drift-psi",
            x_format=when,
        ),
        ui.line_chart(
            {"online hit rate": hit_rate},
            title="Online hit rate per check",
            x_label="check time (UTC)",
            y_label="hits / events with a recommendation",
            testid="chart-hit-rate",
            x_format=when,
        ),
        "</div>",
        note="One point per drift check of the retraining-worker (its recent window against "
        "the active model's training data). Hit rate: events on an item of a recommendation "
        "they carry the id of, over all versions serving in the window.",
    )


def _ingestion_section(pipeline: PipelineStatus) -> str:
    newest = pipeline.throughput[-1].second if pipeline.throughput else 0
    accepted = [(point.second - newest, point.accepted) for point in pipeline.throughput]
    applied = [(point.second - newest, point.applied) for point in pipeline.throughput]
    stats = [
        ui.stat("consumer lag (events)", str(pipeline.consumer_lag), testid="stat-lag"),
        ui.stat("pending (unacked)", str(pipeline.pending), testid="stat-pending"),
        ui.stat("dead letters", str(pipeline.dead_letters), testid="stat-dead-letters"),
        ui.stat(
            "accepted / s (mean)", f"{pipeline.accepted_per_second:.1f}", testid="stat-accepted"
        ),
        ui.stat("applied / s (mean)", f"{pipeline.applied_per_second:.1f}", testid="stat-applied"),
        ui.stat("stream length", str(pipeline.stream_length), testid="stat-stream"),
    ]
    snapshot = pipeline.last_snapshot
    if snapshot is not None:
        stats.append(ui.stat("last snapshot", ui.clock(snapshot.created_at), testid="stat-snap"))
    return ui.section(
        "Ingestion",
        f'<div class="stats">{"".join(stats)}</div>',
        ui.line_chart(
            {"accepted": accepted, "applied": applied},
            title=f"Events per second, last {THROUGHPUT_WINDOW_SECONDS} s",
            x_label="seconds ago",
            y_label="events / s",
            testid="chart-ingestion",
            x_format=lambda value: f"{-value:.0f}",
            width=1200,
            height=200,
        ),
        note="Accepted: taken in by any gateway replica. Applied: written to the features by "
        "the feature-store's consumers. Lag: stream entries not yet delivered to a consumer.",
    )


def _serving_section(process: ui.ProcessMetrics) -> str:
    ratio = process.cache_hit_ratio
    results = sorted(process.cache)
    cache_chart = ui.bar_chart(
        results,
        {"lookups": [float(process.cache[result]) for result in results]},
        title="Response cache lookups by result",
        x_label="result",
        y_label="lookups",
        testid="chart-cache",
        width=330,
    )
    routes = process.latency[:MAX_ROUTES]
    latency_chart = ui.bar_chart(
        [f"{entry.method} {entry.route}" for entry in routes],
        {
            f"p{round(q * 100)}": [
                None if (value := entry.percentiles[q]) is None else value * 1000
                for entry in routes
            ]
            for q in ui.PERCENTILES
        },
        title="Request latency per route (busiest first)",
        x_label="route",
        y_label="milliseconds",
        testid="chart-latency",
        value_format=lambda value: f"{value:.1f} ms",
        width=860,
    )
    return ui.section(
        "Serving (this gateway process)",
        '<div class="stats">'
        + ui.stat(
            "cache hit ratio",
            f"{ratio:.1%}" if ratio is not None else "no lookups yet",
            testid="stat-cache-hit-ratio",
        )
        + ui.stat(
            "requests measured",
            str(sum(entry.count for entry in process.latency)),
            testid="stat-requests",
        )
        + "</div>",
        '<div class="row">',
        cache_chart,
        latency_chart,
        "</div>",
        note="From this gateway process's own Prometheus metrics since it started (other "
        "replicas keep their own): recsys_cache_requests_total, and percentiles interpolated "
        "from the buckets of http_request_duration_seconds.",
    )
