"""The load test's gate: SLO evaluation, summary, fallback and 5xx counting, chart data.

Runs in the project's main virtualenv, fast and without Locust or matplotlib: everything it tests
lives in ``loadtests/report.py``, which imports neither (matplotlib only inside ``draw_chart``).
The CSV below is in the exact format Locust 2.47 writes with ``--csv --csv-full-history``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADTESTS = ROOT / "loadtests"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"loadtests_{name}", LOADTESTS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


report = _load("report")

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
    "99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
    "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
    "Total Average Content Size"
)


def stats_row(method: str, name: str, requests: int, failures: int, p50: int, p95: int, p99: int):
    return (
        f"{method},{name},{requests},{failures},{p50},{p50 * 1.1},1.5,{p99 * 2},1000.0,"
        f"{requests / 60},{failures / 60},{p50},{p50},{p50},{p50},{p95},{p95},{p99},{p99},"
        f"{p99},{p99},{p99 * 2}"
    )


def write_stats(tmp_path: Path, *, failures: int = 3, p95: int = 120, p99: int = 240) -> Path:
    path = tmp_path / "run_stats.csv"
    rows = [
        STATS_HEADER,
        stats_row("GET", "/v1/users/{id}/recommendations", 600, failures, 40, p95, p99),
        stats_row("POST", "/v1/events", 400, 0, 20, 60, 90),
        stats_row("", "Aggregated", 1000, failures, 30, p95, p99),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def history_row(second: int, users: int, rps: float, p50: str, p95: str, p99: str, total: int):
    return (
        f"{1_700_000_000 + second},{users},,Aggregated,{rps:.6f},0.000000,{p50},{p50},{p50},"
        f"{p50},{p95},{p95},{p99},{p99},{p99},{p99},{p99},{total},0,{p50},30.0,1.0,300.0,900.0"
    )


def write_history(tmp_path: Path) -> Path:
    """20 steady seconds at p99 100 ms, 5 seconds of fault at p99 700 ms, 5 recovered."""
    rows = [HISTORY_HEADER, history_row(0, 0, 0.0, "N/A", "N/A", "N/A", 0)]
    # a per-endpoint row, as --csv-full-history writes: the chart must ignore it
    rows.append(
        f"{1_700_000_001},5,GET,/v1/events,1.0,0.0,5,5,5,5,5,5,5,5,5,5,5,3,0,5,5.0,1.0,9.0,30.0"
    )
    total = 0
    for second in range(1, 31):
        total += 25
        p99 = "700" if 21 <= second <= 25 else "100"
        rows.append(history_row(second, 20, 25.0, "30", "80", p99, total))
    path = tmp_path / "run_stats_history.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# ── SLO evaluation ────────────────────────────────────────────────────────────────────────
def test_a_run_within_every_slo_passes(tmp_path: Path) -> None:
    total = report.aggregated(report.read_stats(write_stats(tmp_path)))
    assert (total.requests, total.failures, total.p95_ms, total.p99_ms) == (1000, 3, 120, 240)

    results = report.evaluate(total, report.Slo(failure_ratio=0.01, p95_ms=500, p99_ms=1000))

    assert [result.variable for result in results] == [
        "SLO_FAILURE_RATIO",
        "SLO_P95_MS",
        "SLO_P99_MS",
    ]
    assert all(result.passed for result in results)
    assert report.missed(results) == []


def test_a_tight_p99_slo_fails_naming_the_slo_and_by_how_much(tmp_path: Path) -> None:
    total = report.aggregated(report.read_stats(write_stats(tmp_path, p99=240)))

    results = report.evaluate(total, report.Slo(p99_ms=1))

    [failed] = report.missed(results)
    assert failed.variable == "SLO_P99_MS"
    assert "p99 latency 240 ms is over SLO_P99_MS 1 ms by 239 ms" in failed.message


def test_the_limits_are_inclusive(tmp_path: Path) -> None:
    total = report.aggregated(report.read_stats(write_stats(tmp_path, failures=10, p95=500)))

    results = report.evaluate(total, report.Slo(failure_ratio=0.01, p95_ms=500, p99_ms=240))

    assert report.missed(results) == []


def test_too_many_failures_miss_the_failure_ratio(tmp_path: Path) -> None:
    total = report.aggregated(report.read_stats(write_stats(tmp_path, failures=50)))

    results = report.evaluate(total, report.Slo(failure_ratio=0.01))

    [failed] = report.missed(results)
    assert failed.variable == "SLO_FAILURE_RATIO"
    assert "5.00 % (50 of 1000 requests)" in failed.message
    assert "by 4.00 percentage points" in failed.message


def test_a_run_without_requests_misses_every_slo() -> None:
    empty = report.EndpointStats("", "Aggregated", 0, 0, 0.0, 0.0, 0.0, *(math.nan,) * 3)

    results = report.evaluate(empty, report.Slo())

    assert len(report.missed(results)) == 3
    assert all("no request completed" in result.message for result in results)


def test_slos_come_from_the_environment_with_defaults() -> None:
    defaults = report.Slo.from_env({})
    assert defaults == report.Slo(0.01, 250.0, 500.0)
    tight = report.Slo.from_env({"SLO_P99_MS": "1", "SLO_P95_MS": " ", "SLO_FAILURE_RATIO": "0"})
    assert tight == report.Slo(0.0, defaults.p95_ms, 1.0)
    with pytest.raises(ValueError, match="SLO_P95_MS"):
        report.Slo.from_env({"SLO_P95_MS": "fast"})
    with pytest.raises(ValueError, match="SLO_FAILURE_RATIO"):
        report.Slo.from_env({"SLO_FAILURE_RATIO": "-0.1"})


# ── the summary ───────────────────────────────────────────────────────────────────────────
JOURNEYS = {
    "lists": {
        "known_user|personalized/-": 90,
        "known_user|popular/recommender_unavailable": 10,
        "unknown_user|popular/unknown_user": 30,
        "similar|similar/-": 40,
    },
    "statuses": {"200": 900, "202": 97, "503": 2, "0": 1},
    "fallbacks_per_second": {"1700000021": 10},
}


def test_the_summary_shows_endpoints_fallbacks_and_the_verdict(tmp_path: Path) -> None:
    rows = report.read_stats(write_stats(tmp_path, p99=240))
    results = report.evaluate(report.aggregated(rows), report.Slo(p99_ms=1))
    failures = [{"Method": "GET", "Name": "/v1/items/popular", "Error": "x", "Occurrences": "3"}]

    text = report.render_summary(rows, results, JOURNEYS, failures, notes=["chart: x.png"])

    lines = text.splitlines()
    header = ["method", "endpoint", "requests", "fails", "req/s", "p50", "p95", "p99", "max"]
    assert lines[0].split() == header
    table_end = lines.index("(latencies in ms, percentiles over the whole run)")
    assert lines[table_end - 1].split()[:3] == ["Aggregated", "1000", "3"]  # the total comes last
    assert any(line.split()[:3] == ["POST", "/v1/events", "400"] for line in lines)
    assert "known-user lists not personalised (fallbacks): 10 of 100 (10.00 %)" in text
    assert "known_user lists with fallback_reason recommender_unavailable: 10" in text
    assert "5xx responses: 2" in text
    assert "FAIL SLO_P99_MS: p99 latency 240 ms is over SLO_P99_MS 1 ms by 239 ms" in text
    assert lines[-1].startswith("SLO MISSED: p99 latency 240 ms")
    assert lines.index("chart: x.png") < lines.index(lines[-1])


def test_the_summary_of_a_good_run_ends_with_all_slos_met(tmp_path: Path) -> None:
    rows = report.read_stats(write_stats(tmp_path))
    results = report.evaluate(report.aggregated(rows), report.Slo())

    assert report.render_summary(rows, results).splitlines()[-1] == "all SLOs met"


def test_fallbacks_count_known_users_that_were_not_personalised() -> None:
    seen = report.fallbacks(JOURNEYS)

    assert (seen.known_user_lists, seen.known_user_fallbacks) == (100, 10)
    assert seen.ratio == pytest.approx(0.1)
    assert seen.by_reason == {
        "known_user/recommender_unavailable": 10,
        "unknown_user/unknown_user": 30,
    }


def test_server_errors_from_status_counts_or_else_from_failure_messages() -> None:
    assert report.server_errors(JOURNEYS, []) == 2
    failures = [
        {"Error": "CatchResponseError('HTTP 503 (server error): Upstream unavailable')",
         "Occurrences": "4"},
        {"Error": "CatchResponseError('HTTP 404 (unexpected): Not found')", "Occurrences": "7"},
        {"Error": "CatchResponseError('connection error: ConnectionRefusedError')",
         "Occurrences": "1"},
    ]  # fmt: skip
    assert report.server_errors({}, failures) == 4


def test_reading_a_whole_run(tmp_path: Path) -> None:
    write_stats(tmp_path)
    write_history(tmp_path)
    with (tmp_path / "run_failures.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"])
        writer.writerow(["GET", "/v1/items/popular", "HTTP 502", "1", "", ""])
    (tmp_path / "run_journeys.json").write_text(json.dumps(JOURNEYS), encoding="utf-8")

    run = report.load_run(tmp_path / "run")

    assert len(run["stats"]) == 3
    assert len(run["history"]) == 31
    assert run["failures"][0]["Error"] == "HTTP 502"
    assert run["journeys"]["statuses"]["503"] == 2
    assert report.read_journeys(tmp_path / "absent.json")["lists"] == {}
    assert report.read_failures(tmp_path / "absent.csv") == []


# ── the chart's data and the p99 spike ───────────────────────────────────────────────────
def test_chart_series_keep_only_the_aggregated_rows_in_time_order(tmp_path: Path) -> None:
    history = report.read_history(write_history(tmp_path))

    series = report.chart_series(history)

    assert series.seconds[:3] == [0.0, 1.0, 2.0]
    assert series.seconds[-1] == 30.0
    assert math.isnan(series.p99_ms[0])  # Locust's "N/A" before the first request
    assert series.users[1:4] == [20, 20, 20]
    assert series.rps[5] == 25.0
    assert (series.p50_ms[5], series.p95_ms[5], series.p99_ms[5]) == (30.0, 80.0, 100.0)
    assert max(value for value in series.p99_ms if not math.isnan(value)) == 700.0
    with pytest.raises(ValueError, match="no history"):
        report.chart_series([])


def test_the_p99_spike_compares_the_fault_window_with_the_steady_median(tmp_path: Path) -> None:
    history = report.read_history(write_history(tmp_path))
    start = 1_700_000_000

    spike = report.p99_spike(
        history, steady=(start + 1, start + 20), faults=(start + 20, start + 30)
    )

    assert (spike.steady_p99_ms, spike.max_p99_ms) == (100.0, 700.0)
    assert spike.increase_ms == 600.0
    assert spike.factor == pytest.approx(7.0)
    calm = report.p99_spike(
        history, steady=(start + 1, start + 20), faults=(start + 26, start + 30)
    )
    assert calm.max_p99_ms == 100.0


# ── the data the journeys draw from ──────────────────────────────────────────────────────
def test_the_shipped_id_files_cover_the_movielens_demo() -> None:
    with (LOADTESTS / "data" / "user_weights.csv").open(newline="", encoding="utf-8") as file:
        users = list(csv.DictReader(file))
    with (LOADTESTS / "data" / "movies.csv").open(newline="", encoding="utf-8") as file:
        movies = list(csv.DictReader(file))

    assert len(users) == 671
    assert {row["user_id"] for row in users} == {str(user) for user in range(1, 672)}
    assert sum(int(row["ratings"]) for row in users) == 100_004
    assert len(movies) == 1000
    assert all(row["title"] and row["item_id"].isdigit() for row in movies)
    assert all(row["categories"] for row in movies)
