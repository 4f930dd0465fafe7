"""The operator status page: its chart functions, percentiles from histogram buckets, and the
route on a real Redis with versions recorded through ``ModelRegistry``."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.status_page import (
    NO_DATA,
    bar_chart,
    histogram_quantile,
    line_chart,
    read_process_metrics,
    table,
)
from recsys_shared import keys
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import DriftReport, ModelInfo, ModelStatus, OnlineHitRate

PROBLEM = "application/problem+json"
CHART = re.compile(r'data-testid="([^"]+)" data-points="(\d+)" data-max="([^"]+)"')


def _charts(html: str) -> dict[str, tuple[int, float]]:
    return {name: (int(points), float(top)) for name, points, top in CHART.findall(html)}


# ── charts ────────────────────────────────────────────────────────────────────────────────
def test_a_line_chart_draws_one_marker_per_point() -> None:
    svg = line_chart(
        {"accepted": [(0, 1.0), (1, 3.0), (2, 2.0)], "applied": [(0, 0.5), (2, 4.0)]},
        title="Events <per> second",
        x_label="seconds ago",
        y_label="events / s",
        testid="chart-x",
    )

    assert svg.count('class="marker"') == 5
    assert _charts(svg) == {"chart-x": (5, 4.0)}
    assert svg.count("<polyline") == 2
    assert "Events &lt;per&gt; second" in svg  # the title, escaped
    assert "seconds ago" in svg
    assert "events / s" in svg
    assert NO_DATA not in svg


def test_a_bar_chart_draws_one_bar_per_value_and_skips_missing_ones() -> None:
    svg = bar_chart(
        ["v1", "v2", "v3"],
        {"model": [0.2, 0.25, None], "baseline": [0.1, 0.12, 0.11]},
        title="precision",
        x_label="model version",
        y_label="precision@10",
        testid="chart-bars",
    )

    assert svg.count('class="bar"') == 5
    assert _charts(svg) == {"chart-bars": (5, 0.25)}
    assert all(label in svg for label in ("v1", "v2", "v3", "model version", "precision@10"))


@pytest.mark.parametrize(
    "chart",
    [
        lambda: line_chart({}, title="t", x_label="x", y_label="y", testid="empty"),
        lambda: line_chart({"a": []}, title="t", x_label="x", y_label="y", testid="empty"),
        lambda: bar_chart([], {}, title="t", x_label="x", y_label="y", testid="empty"),
        lambda: bar_chart(
            ["v1"], {"a": [None]}, title="t", x_label="x", y_label="y", testid="empty"
        ),
    ],
)
def test_an_empty_chart_says_there_is_no_data_yet(chart: Any) -> None:
    svg = chart()

    assert NO_DATA in svg
    assert _charts(svg) == {"empty": (0, 0.0)}
    assert 'class="marker"' not in svg
    assert 'class="bar"' not in svg


def test_a_single_point_and_all_zero_values_still_draw() -> None:
    one = line_chart({"a": [(5, 0.0)]}, title="t", x_label="x", y_label="y", testid="one")
    zeros = bar_chart(
        ["a", "b"], {"n": [0.0, 0.0]}, title="t", x_label="x", y_label="y", testid="z"
    )

    assert _charts(one) == {"one": (1, 0.0)}
    assert _charts(zeros) == {"z": (2, 0.0)}
    assert "nan" not in one + zeros


def test_table_cells_are_escaped_and_an_empty_table_says_so() -> None:
    html = table(["a"], [["<script>"]], testid="t")
    assert "&lt;script&gt;" in html
    assert "<script>" not in html
    assert NO_DATA in table(["a", "b"], [], testid="t")


# ── percentiles ───────────────────────────────────────────────────────────────────────────
BUCKETS = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0)]


@pytest.mark.parametrize(
    ("quantile", "expected"),
    [
        # rank 4 of 40 falls in [0, 0.1] holding 10: 0 + 0.1 * 4/10
        (0.1, 0.04),
        # rank 20 falls in (0.1, 0.5] holding 20 (10..30): 0.1 + 0.4 * (20-10)/20
        (0.5, 0.3),
        # rank 38 falls in (0.5, 1.0] holding 10 (30..40): 0.5 + 0.5 * (38-30)/10
        (0.95, 0.9),
        (0.99, 0.98),
    ],
)
def test_percentiles_are_interpolated_inside_their_bucket(quantile: float, expected: float) -> None:
    assert histogram_quantile(quantile, BUCKETS) == pytest.approx(expected)
    assert histogram_quantile(quantile, list(reversed(BUCKETS))) == pytest.approx(expected)


def test_a_rank_in_the_inf_bucket_gives_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(0.1, 5.0), (0.25, 5.0), (math.inf, 10.0)]) == 0.25


def test_no_observation_gives_no_percentile() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_process_metrics_are_read_from_a_prometheus_registry() -> None:
    registry = CollectorRegistry()
    latency = Histogram(
        "http_request_duration_seconds",
        "latency",
        ["route", "method"],
        buckets=(0.1, 0.5, 1.0),
        registry=registry,
    )
    cache = Counter("recsys_cache_requests_total", "cache", ["result"], registry=registry)
    for _ in range(10):
        latency.labels("/v1/a", "GET").observe(0.05)
    for _ in range(20):
        latency.labels("/v1/a", "GET").observe(0.3)
    latency.labels("/v1/b", "POST").observe(0.7)
    latency.labels("/v1/unused", "GET")  # a labelled child with no observation: left out
    cache.labels("hit").inc(3)
    cache.labels("miss").inc(1)

    metrics = read_process_metrics(registry)

    assert metrics.cache == {"hit": 3, "miss": 1}
    assert metrics.cache_hit_ratio == pytest.approx(0.75)
    assert [(entry.method, entry.route, entry.count) for entry in metrics.latency] == [
        ("GET", "/v1/a", 30),
        ("POST", "/v1/b", 1),
    ]
    # rank 15 of 30: (0.1, 0.5] holds 20 (10..30): 0.1 + 0.4 * 5/20
    assert metrics.latency[0].percentiles[0.5] == pytest.approx(0.2)


def test_no_cache_lookup_means_no_hit_ratio() -> None:
    assert read_process_metrics(CollectorRegistry()).cache_hit_ratio is None


# ── the route ─────────────────────────────────────────────────────────────────────────────
def _run(gateway: Any, function: Any, *args: Any, **kwargs: Any) -> Any:
    return gateway.client.portal.call(functools.partial(function, *args, **kwargs))


def _info(version: int, status: ModelStatus, **fields: Any) -> ModelInfo:
    values: dict[str, Any] = {
        "version": version,
        "status": status,
        "algorithm": "als",
        "created_at": datetime(2024, 1, version, tzinfo=UTC),
        "snapshot_id": f"snap-{version}",
        "artifact_url": f"file:///artifacts/v{version}",
        "metrics": {"precision_at_10": 0.2 + 0.01 * version},
        "baseline_metrics": {"precision_at_10": 0.1},
        **fields,
    }
    return ModelInfo(**values)


@pytest.fixture
def seeded(gateway: Any, store: redis.Redis) -> None:
    """Two versions (1 active, 2 rejected by the gate) and two drift reports."""
    registry: ModelRegistry = gateway.state["registry"]
    _run(gateway, registry.publish, _info(1, ModelStatus.CANDIDATE), reason="first model")
    rejected = _info(
        2,
        ModelStatus.REJECTED,
        status_reason="precision below baseline",
        artifact_url=None,
        metrics={"precision_at_10": 0.05},
    )
    _run(gateway, registry.record, rejected)
    now = datetime.now(UTC)
    for hours, psi in ((2, 0.05), (1, 0.3)):
        report = DriftReport(
            status="ok",
            checked_at=now - timedelta(hours=hours),
            window_hours=24,
            window_start=now - timedelta(hours=24 + hours),
            events=100,
            model_version=1,
            psi=psi,
            hit_rate={"1": OnlineHitRate(events=50, hits=10, hit_rate=0.2)},
        )
        store.lpush(keys.DRIFT_HISTORY, report.model_dump_json())


def test_the_status_page_needs_a_key(gateway: Any) -> None:
    for path in ("/v1/status", "/v1/status?key=", "/v1/status?key=wrong"):
        response = gateway.client.get(path)
        assert response.status_code == 401, path
        assert response.headers["content-type"] == PROBLEM


def test_the_status_page_refuses_a_client_key(gateway: Any, client_headers: dict[str, str]) -> None:
    from_header = gateway.client.get("/v1/status", headers=client_headers)
    from_query = gateway.client.get("/v1/status", params={"key": client_headers["X-API-Key"]})

    for response in (from_header, from_query):
        assert response.status_code == 403
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"] == "urn:recsys:problem:permission-denied"


def test_the_query_key_is_taken_on_the_status_page_only(
    gateway: Any, admin_headers: dict[str, str]
) -> None:
    response = gateway.client.get("/v1/models", params={"key": admin_headers["X-API-Key"]})
    assert response.status_code == 401


@pytest.mark.usefixtures("seeded")
def test_the_status_page_shows_the_system(
    gateway: Any, admin_headers: dict[str, str], client_headers: dict[str, str]
) -> None:
    events = [
        {"event_id": f"s{index}", "user_id": "u", "item_id": "i", "type": "view"}
        for index in range(4)
    ]
    posted = gateway.client.post("/v1/events", json={"events": events}, headers=client_headers)
    assert posted.status_code == 202

    by_header = gateway.client.get("/v1/status", headers=admin_headers)
    by_query = gateway.client.get("/v1/status", params={"key": admin_headers["X-API-Key"]})

    for response in (by_header, by_query):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]
    html = by_query.text
    # Self-contained: nothing is fetched from anywhere.
    assert "<script" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    # The table lists both versions with their lineage and the gate's reason.
    assert 'data-rows="2"' in html
    for text in ("snap-1", "snap-2", "precision below baseline", "first model", "0.210 vs 0.100"):
        assert text in html, text
    charts = _charts(html)
    assert charts["chart-model-precision"] == (4, pytest.approx(0.21))  # 2 versions x 2 bars
    assert charts["chart-drift-psi"] == (2, pytest.approx(0.3))
    assert charts["chart-hit-rate"] == (2, pytest.approx(0.2))
    # Accepted and applied for each whole second of the last 60 (the 4 events above may still
    # be in the current second, which is not drawn yet).
    assert charts["chart-ingestion"][0] == 120
    assert charts["chart-latency"][0] > 0  # the requests above went through this process
    assert {"chart-cache"} <= set(charts)


def test_the_status_page_of_an_empty_system_says_no_data(
    gateway: Any, admin_headers: dict[str, str]
) -> None:
    response = gateway.client.get("/v1/status", headers=admin_headers)

    assert response.status_code == 200
    charts = _charts(response.text)
    assert charts["chart-model-precision"] == (0, 0.0)
    assert charts["chart-drift-psi"] == (0, 0.0)
    assert NO_DATA in response.text
