"""The operator status page: sparklines, percentiles from histogram buckets, and the route on a
real Redis with versions recorded through ``ModelRegistry``. How a browser signs in to it is in
``test_status_session.py``."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.status_page.experiments import MAX_STEPS, Shown, duration
from gateway.status_page.experiments import section as experiment_section
from gateway.status_page.markup import NO_DATA, sparkline, table
from gateway.status_page.metrics import histogram_quantile, read_process_metrics
from recsys_shared import keys
from recsys_shared.experiments.report import build_report
from recsys_shared.experiments.store import Counters
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import (
    DriftReport,
    ExperimentIn,
    ExperimentMode,
    ExperimentState,
    ExperimentStep,
    ModelInfo,
    ModelStatus,
    OnlineHitRate,
    StoredExperiment,
    VariantIn,
)
from recsys_shared.testing import assert_problem, model_info, view_batch

LINE = re.compile(r'data-testid="([^"]+)" data-points="(\d+)" data-max="([^"]+)"')
STAT = re.compile(r'data-testid="(stat-[^"]+)" data-value="([^"]*)"')
POINTS = re.compile(r'<polyline points="([^"]*)"')


def _lines(html: str) -> dict[str, tuple[int, float]]:
    return {name: (int(points), float(top)) for name, points, top in LINE.findall(html)}


def _stats(html: str) -> dict[str, str]:
    return dict(STAT.findall(html))


# ── sparklines ────────────────────────────────────────────────────────────────────────────
def test_a_sparkline_draws_one_point_per_value_and_marks_the_last() -> None:
    svg = sparkline([1.0, 3.0, 2.0, 4.0], testid="spark-x", label="events <per> second")

    assert _lines(svg) == {"spark-x": (4, 4.0)}
    [points] = POINTS.findall(svg)
    placed = [tuple(map(float, pair.split(","))) for pair in points.split()]
    assert len(placed) == 4
    xs = [x for x, _ in placed]
    assert xs == sorted(xs)  # oldest first, left to right
    # Higher values are higher up (smaller y); the largest touches the top padding.
    assert placed[3][1] < placed[1][1] < placed[2][1] < placed[0][1]
    assert "<circle" in svg
    assert f'cx="{placed[3][0]:.1f}"' in svg
    assert "events &lt;per&gt; second: 4 values, last 4, highest 4" in svg  # escaped
    assert NO_DATA not in svg


def test_missing_and_non_finite_values_are_left_out() -> None:
    svg = sparkline([None, 1.0, math.nan, 2.0, math.inf], testid="s", label="l")

    assert _lines(svg) == {"s": (2, 2.0)}
    assert len(POINTS.findall(svg)[0].split()) == 2
    assert "nan" not in svg
    assert "inf" not in svg


@pytest.mark.parametrize("values", [[], [None], [None, math.nan]])
def test_an_empty_sparkline_says_there_is_no_data_yet(values: list[float | None]) -> None:
    html = sparkline(values, testid="empty", label="l")

    assert NO_DATA in html
    assert _lines(html) == {"empty": (0, 0.0)}
    assert "<svg" not in html


def test_a_single_value_and_all_zeros_still_draw() -> None:
    one = sparkline([0.5], testid="one", label="l")
    zeros = sparkline([0.0, 0.0, 0.0], testid="z", label="l")

    assert _lines(one) == {"one": (1, 0.5)}
    assert _lines(zeros) == {"z": (3, 0.0)}
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
    fields.setdefault("metrics", {"precision_at_10": 0.2 + 0.01 * version})
    fields.setdefault("baseline_metrics", {"precision_at_10": 0.1})
    return model_info(version, status, **fields)


@pytest.fixture
def seeded(gateway: Any, store: redis.Redis) -> None:
    """Two versions (1 active, 2 rejected by the gate) and two drift reports."""
    registry: ModelRegistry = gateway.state.registry
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
    for hours, psi, hits in ((2, 0.05, 10), (1, 0.3, 15)):
        report = DriftReport(
            status="ok",
            checked_at=now - timedelta(hours=hours),
            window_hours=24,
            window_start=now - timedelta(hours=24 + hours),
            events=100,
            model_version=1,
            psi=psi,
            hit_rate={"1": OnlineHitRate(events=50, hits=hits, hit_rate=hits / 50)},
        )
        store.lpush(keys.DRIFT_HISTORY, report.model_dump_json())


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Sign in at /v1/status/login, or send a key"),
        ({"X-API-Key": "wrong"}, "The API key is not valid."),
        ({"Cookie": "recsys_status_session=forged"}, "session has expired, was altered"),
    ],
)
def test_the_status_page_needs_a_key(gateway: Any, headers: dict[str, str], detail: str) -> None:
    response = gateway.client.get("/v1/status", headers=headers)

    assert_problem(response, 401)
    assert detail in response.json()["detail"]


def test_the_status_page_refuses_a_client_key(gateway: Any, client_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/status", headers=client_headers)

    assert_problem(response, 403)
    body = response.json()
    assert body["type"] == "urn:recsys:problem:permission-denied"
    assert "viewer or admin role" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/status", "/v1/status/login"])
@pytest.mark.parametrize("key", ["ak", "ck", "wrong", ""])
def test_a_key_in_the_url_is_refused_saying_why(gateway: Any, path: str, key: str) -> None:
    # Even a valid admin key, and even with the header also set: the URL already leaked it.
    response = gateway.client.get(
        path, params={"key": key}, headers={"X-API-Key": "ak"}, follow_redirects=False
    )

    assert_problem(response, 400)
    body = response.json()
    assert body["type"] == "urn:recsys:problem:key-in-url"
    assert body["title"] == "API key in the URL"
    for reason in ("URL", "logs", "history", "/v1/status/login", "X-API-Key"):
        assert reason in body["detail"], reason


def test_a_key_in_the_url_is_refused_on_sign_in_too(gateway: Any) -> None:
    response = gateway.client.post(
        "/v1/status/login?key=ak",
        data={"key": "ak"},
        headers={"Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert response.status_code == 400
    assert "set-cookie" not in response.headers


@pytest.mark.usefixtures("seeded")
def test_the_status_page_shows_the_system(
    gateway: Any, admin_headers: dict[str, str], client_headers: dict[str, str]
) -> None:
    events = view_batch("s", "u", "i", 4)
    posted = gateway.client.post("/v1/events", json={"events": events}, headers=client_headers)
    assert posted.status_code == 202

    response = gateway.client.get("/v1/status", headers=admin_headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "form-action 'self'" in policy
    html = response.text
    # Self-contained: nothing is fetched from anywhere, and no script.
    assert "<script" not in html
    assert "http://" not in html
    assert "https://" not in html
    # Signed in by the header: no session to end, so no sign-out button.
    assert 'action="/v1/status/logout"' not in html  # (the latency table may name the route)
    # The table lists both versions with their lineage and the gate's reason.
    assert 'data-rows="2"' in html
    for text in ("snap-1", "snap-2", "precision below baseline", "first model", "0.210 vs 0.100"):
        assert text in html, text
    stats = _stats(html)
    assert stats["stat-active-version"] == "1"
    assert stats["stat-active-precision"] == "0.210"
    assert stats["stat-baseline-precision"] == "0.100"
    assert stats["stat-drift-checks"] == "2"
    assert stats["stat-drift-psi"] == "0.300"  # the latest check's
    assert stats["stat-hit-rate"] == "30.0%"
    assert stats["stat-lag"].isdigit()
    lines = _lines(html)
    assert lines["spark-model-precision"] == (2, pytest.approx(0.21))  # v1 0.21, v2 0.05
    assert lines["spark-baseline-precision"] == (2, pytest.approx(0.1))
    assert lines["spark-drift-psi"] == (2, pytest.approx(0.3))
    assert lines["spark-hit-rate"] == (2, pytest.approx(0.3))
    # Accepted and applied for each whole second of the last 60 (the 4 events above may still
    # be in the current second, which is not drawn yet).
    assert lines["spark-accepted"][0] == 60
    assert lines["spark-applied"][0] == 60
    # The requests above went through this process: its latency table has rows.
    rows = re.search(r'data-testid="table-latency" data-rows="(\d+)"', html)
    assert rows is not None
    assert int(rows.group(1)) > 0
    assert "POST /v1/events" in html


def test_the_status_page_of_an_empty_system_says_no_data(
    gateway: Any, admin_headers: dict[str, str]
) -> None:
    response = gateway.client.get("/v1/status", headers=admin_headers)

    assert response.status_code == 200
    lines = _lines(response.text)
    assert lines["spark-model-precision"] == (0, 0.0)
    assert lines["spark-drift-psi"] == (0, 0.0)
    assert _stats(response.text)["stat-active-version"] == "none"
    assert NO_DATA in response.text


# ── experiments ───────────────────────────────────────────────────────────────────────────
TABLE = re.compile(r'<table data-testid="([^"]+)" data-rows="\d+">.*?<tbody>(.*?)</tbody>')
ROW = re.compile(r"<tr>(.*?)</tr>")
CELL = re.compile(r"<td>(.*?)</td>")


def _tables(html: str) -> dict[str, list[list[str]]]:
    """Every table's body rows, cells unescaped (an empty table's "no data" row is none)."""
    tables: dict[str, list[list[str]]] = {}
    for name, body in TABLE.findall(html):
        rows = [[unescape(cell) for cell in CELL.findall(row)] for row in ROW.findall(body)]
        tables[name] = [row for row in rows if row]
    return tables


def _start(gateway: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = gateway.client.post("/v1/experiments", json=body, headers={"X-API-Key": "ak"})
    assert response.status_code == 201, response.text
    experiment: dict[str, Any] = response.json()
    return experiment


@pytest.fixture
def versions(gateway: Any) -> None:
    """Versions 1 (active), 2 and 3 (candidates), each with an artifact; the recommenders load
    whatever an experiment asks for."""
    registry: ModelRegistry = gateway.state.registry
    _run(gateway, registry.publish, _info(1, ModelStatus.CANDIDATE), reason="first model")
    for version in (2, 3):
        _run(gateway, registry.record, _info(version, ModelStatus.CANDIDATE))
    gateway.recommender.handler = lambda request: httpx.Response(200, json={"prepared": True})


def _ab(name: str, control: int, treatment: int) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "ab",
        "metric": "ctr",
        "variants": [
            {"model_version": control, "weight": 0.5},
            {"model_version": treatment, "weight": 0.5},
        ],
        "min_exposures": 1000,
        "max_duration_seconds": 86_400,
    }


@pytest.mark.usefixtures("versions")
def test_the_status_page_shows_the_running_experiments_figures_and_the_ended_ones(
    gateway: Any, admin_headers: dict[str, str], store: redis.Redis
) -> None:
    ended = _start(gateway, _ab("first try", 1, 2))
    stopped = gateway.client.post(f"/v1/experiments/{ended['id']}/stop", headers=admin_headers)
    assert stopped.status_code == 200, stopped.text
    running = _start(gateway, _ab("<b>ranker</b> & co", 1, 3))
    # Counters as the gateways (exposures) and the feature-store's apply script (events) keep
    # them in a partition's hash; started six hours ago.
    exposures, events, clicks = keys.VARIANT_EXPOSURES, keys.VARIANT_EVENTS, keys.VARIANT_CLICKS
    counts = {
        "control": {exposures: 400, events: 50, clicks: 40},
        "treatment-1": {exposures: 400, events: 70, clicks: 60, keys.VARIANT_CONVERSIONS: 6},
    }
    [partition] = gateway.settings.partitions.all
    for variant, fields in counts.items():
        for suffix, value in fields.items():
            store.hset(partition.experiment(running["id"]), variant + suffix, value)
    started = datetime.now(UTC) - timedelta(hours=6, seconds=30)
    store.zadd(keys.EXPERIMENTS, {running["id"]: started.timestamp()})

    response = gateway.client.get("/v1/status", headers=admin_headers)

    assert response.status_code == 200, response.text
    html = response.text
    assert "<b>ranker</b>" not in html  # escaped like every value on the page
    stats = _stats(html)
    assert unescape(stats["stat-experiment-name"]) == "<b>ranker</b> & co"
    assert stats["stat-experiment-id"] == running["id"]
    assert stats["stat-experiment-mode"] == "ab"
    assert stats["stat-experiment-metric"] == "ctr"
    assert stats["stat-experiment-age"] == "6h of 1d (25%)"
    assert stats["stat-experiment-decision"] == "running"
    assert stats["stat-experiment-min-exposures"] == "1000"
    # The figures are the API's, formatted: rates and intervals in %, differences in points.
    api = gateway.client.get(f"/v1/experiments/{running['id']}", headers=admin_headers).json()
    control, treatment = api["variants"]
    assert (control["rate"], treatment["rate"]) == (0.1, 0.15)
    low, high = treatment["difference_interval"]["low"], treatment["difference_interval"]["high"]
    tables = _tables(html)
    assert tables["table-experiment-variants"] == [
        [
            "control", "1", "50%", "400", "50", "40", "0",
            f"10.00% ({control['interval']['low']:.2%} to {control['interval']['high']:.2%})",
            "—", "control",
        ],
        [
            "treatment-1", "3", "50%", "400", "70", "60", "6",
            f"15.00% ({treatment['interval']['low']:.2%} to {treatment['interval']['high']:.2%})",
            f"+5.00 pts ({low * 100:+.2f} to {high * 100:+.2f})", treatment["verdict"],
        ],
    ]  # fmt: skip
    assert treatment["verdict"] in {"better", "undecided"}
    [step] = tables["table-experiment-steps"]
    assert step[1:] == ["50% / 50%", "started"]
    # The ended experiment, with its decision and why.
    kept = gateway.client.get(f"/v1/experiments/{ended['id']}", headers=admin_headers).json()
    assert tables["table-experiments-ended"] == [
        [
            ended["id"], "first try", "ab", "ctr", "1 vs 2", "0 / 0",
            _clock(kept["created_at"]), _clock(kept["ended_at"]),
            "stopped", "stopped through the admin API",
        ]
    ]  # fmt: skip


def _clock(moment: str) -> str:
    return datetime.fromisoformat(moment).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.usefixtures("versions")
def test_the_status_page_says_no_experiment_runs_and_lists_the_ended(
    gateway: Any, admin_headers: dict[str, str]
) -> None:
    html = gateway.client.get("/v1/status", headers=admin_headers).text
    assert _stats(html)["stat-experiment-name"] == "none"
    assert _tables(html)["table-experiments-ended"] == []

    ended = _start(gateway, _ab("over", 2, 3))
    gateway.client.post(f"/v1/experiments/{ended['id']}/stop", headers=admin_headers)
    html = gateway.client.get("/v1/status", headers=admin_headers).text

    assert _stats(html)["stat-experiment-name"] == "none"
    assert "table-experiment-variants" not in html
    [row] = _tables(html)["table-experiments-ended"]
    assert (row[0], row[1], row[4], row[8]) == (ended["id"], "over", "2 vs 3", "stopped")


NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def _stored(mode: str, second: VariantIn, steps: list[ExperimentStep], **fields: Any) -> Any:
    definition = ExperimentIn(
        name=f"{mode} try",
        mode=ExperimentMode(mode),
        variants=[VariantIn(model_version=4), second],
        **fields,
    )
    state = ExperimentState(shares=definition.shares(), steps=steps)
    return StoredExperiment(
        id="9", created_at=NOW - timedelta(minutes=90), definition=definition, state=state
    )


def test_a_shadow_experiment_shows_the_shadows_figures() -> None:
    started = ExperimentStep(at=NOW - timedelta(minutes=90), shares=[1.0, 0.2], note="started")
    stored = _stored("shadow", VariantIn(model_version=5, weight=0.2), [started], metric="hit_rate")
    counters = Counters(
        {
            "control:exposures": 1000,
            "control:events": 200,
            "control:clicks": 30,
            "shadow:exposures": 150,
            "shadow:overlap": 90_000,  # thousandths: a mean overlap of 0.6 over 150 rankings
            "shadow:events": 40,
            "shadow:clicks": 10,
        }
    )
    report = build_report(stored, counters, tau=0.05, alpha=0.05)

    html = experiment_section(Shown(stored, report), [], now=NOW)

    stats = _stats(html)
    assert stats["stat-experiment-mode"] == "shadow"
    assert stats["stat-experiment-age"] == "1h 30m of 7d (1%)"
    assert stats["stat-shadow-version"] == "5"
    assert stats["stat-shadow-share"] == "20%"
    assert stats["stat-shadow-rankings"] == "150"
    assert stats["stat-shadow-overlap"] == "60.00%"
    assert stats["stat-shadow-hit-rate"] == "25.00%"
    # Only the control serves lists: one row, its hit rate 30 of 200 events.
    [control] = _tables(html)["table-experiment-variants"]
    assert control[:2] == ["control", "4"]
    assert control[7].startswith("15.00% (")


def test_a_canarys_latest_steps_are_listed_oldest_first() -> None:
    steps = [
        ExperimentStep(at=NOW - timedelta(minutes=60 - i), shares=[0.5, 0.5], note=f"step {i}")
        for i in range(MAX_STEPS + 3)
    ]
    stored = _stored("canary", VariantIn(model_version=5), steps)
    report = build_report(stored, Counters({}), tau=0.05, alpha=0.05)

    html = experiment_section(Shown(stored, report), [Shown(stored, report)], now=NOW)

    rows = _tables(html)["table-experiment-steps"]
    assert [row[2] for row in rows] == [f"step {i}" for i in range(3, MAX_STEPS + 3)]
    assert rows[-1][1] == "50% / 50%"
    # No data yet: no rate, no difference, no verdict.
    canary = _tables(html)["table-experiment-variants"][1]
    assert canary[7:] == ["—", "—", "—"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45, "45s"), (3_661, "1h 1m"), (21_630, "6h"), (90_061, "1d 1h"), (604_800, "7d")],
)
def test_durations_show_their_two_largest_units(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
