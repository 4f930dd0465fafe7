"""The SLO checks on Locust's own statistics objects: limits, messages, 5xx, the p99 spike."""

from __future__ import annotations

import math

import pytest
from locust.stats import RequestStats
from locust_runs import (
    EVENTS,
    POPULAR,
    T0,
    Clock,
    fail,
    healthy_run,
    run_with_history,
    server_error,
)
from slo import (
    Limits,
    fallback_ratio,
    load_checks,
    missed,
    p99_series,
    p99_spike,
    render,
    server_errors,
)

GENEROUS = Limits(failure_ratio=0.01, p95_ms=500, p99_ms=1000, fallback_ratio=0.05)


def test_a_run_within_every_slo_passes() -> None:
    stats = healthy_run(RequestStats())
    assert stats.total.num_requests == 1000
    assert stats.total.get_response_time_percentile(0.95) == 40
    assert stats.total.get_response_time_percentile(0.99) == 240

    checks = load_checks(stats, GENEROUS, fallen=0, lists=100)

    assert [check.name for check in checks] == [
        "SLO_FAILURE_RATIO",
        "SLO_P95_MS",
        "SLO_P99_MS",
        "SLO_FALLBACK_RATIO",
        "5xx",
    ]
    assert all(check.passed for check in checks)
    assert missed(checks) == []


def test_a_tight_p99_fails_naming_the_slo_by_how_much_and_the_slowest_endpoint() -> None:
    stats = healthy_run(RequestStats())

    [failed] = missed(load_checks(stats, Limits(p99_ms=1), fallen=0, lists=100))

    assert failed.name == "SLO_P99_MS"
    assert failed.message == (
        "p99 latency 240 ms is over SLO_P99_MS 1 ms by 239 ms, 240x the limit "
        "(slowest: GET /v1/users/{id}/recommendations, p99 240 ms)"
    )


def test_a_p95_a_little_over_says_the_factor_with_decimals() -> None:
    [failed] = missed(load_checks(healthy_run(RequestStats()), Limits(p95_ms=32), 0, 100))

    assert failed.name == "SLO_P95_MS"
    assert "p95 latency 40 ms is over SLO_P95_MS 32 ms by 8 ms, 1.25x the limit" in failed.message


def test_the_limits_are_inclusive() -> None:
    stats = healthy_run(RequestStats(), failures=10)
    exact = Limits(failure_ratio=0.01, p95_ms=40, p99_ms=240, fallback_ratio=0.1)

    assert missed(load_checks(stats, exact, fallen=10, lists=100)) == []


def test_too_many_failures_miss_the_ratio_and_name_the_endpoint_that_failed() -> None:
    stats = healthy_run(RequestStats(), failures=50)

    [failed] = missed(load_checks(stats, GENEROUS, fallen=0, lists=100))

    assert failed.name == "SLO_FAILURE_RATIO"
    assert "failure ratio 5.00 % (50 of 1000 requests)" in failed.message
    assert "by 4.00 percentage points" in failed.message
    assert "most failures: POST /v1/events, 50" in failed.message


def test_a_run_without_requests_misses_every_slo() -> None:
    checks = load_checks(RequestStats(), Limits(), fallen=0, lists=0)

    assert len(missed(checks)) == 4
    assert all("no request completed" in check.message for check in checks)


def test_fallbacks_over_their_share_miss() -> None:
    assert fallback_ratio(5, 100, 0.05).passed
    failed = fallback_ratio(30, 100, 0.05)

    assert not failed.passed
    assert failed.message == (
        "known-user lists not personalised 30.00 % (30 of 100) is over SLO_FALLBACK_RATIO "
        "5.00 % by 25.00 percentage points"
    )
    assert fallback_ratio(0, 0, 0.0).passed  # no known-user list at all is no fallback


def test_server_errors_are_counted_from_locusts_error_table() -> None:
    stats = healthy_run(RequestStats())
    fail(stats, POPULAR, server_error(503), 4)
    fail(stats, EVENTS, server_error(502), 1)
    fail(stats, POPULAR, "HTTP 404 (unexpected): Not found", 7)
    fail(stats, POPULAR, "connection error: ConnectionRefusedError", 1)
    # a distributed run's master holds the workers' errors as strings
    stats.log_error("GET", POPULAR[1], "CatchResponseError('" + server_error(500) + "')")

    assert server_errors(stats) == 6
    check = load_checks(stats, GENEROUS, fallen=0, lists=100)[-1]
    assert (check.name, check.passed, check.gated) == ("5xx", False, False)  # reported only


def test_the_verdict_names_every_miss_and_comes_last() -> None:
    checks = load_checks(healthy_run(RequestStats()), Limits(p95_ms=1, p99_ms=1), 0, 100)

    lines = render(checks, notes=["lists with fallback_reason unknown_user/unknown_user: 3"])
    lines_ = lines.splitlines()

    assert lines_[0].startswith("PASS SLO_FAILURE_RATIO: failure ratio 0.00 %")
    assert lines_[1].startswith("FAIL SLO_P95_MS: p95 latency 40 ms")
    assert lines_[4] == "info 5xx: 0 responses with a 5xx status"
    assert lines_[5].startswith("lists with fallback_reason")
    assert lines_[-1].startswith("SLO MISSED: p95 latency 40 ms is over SLO_P95_MS 1 ms")
    assert "; p99 latency 240 ms is over SLO_P99_MS 1 ms" in lines_[-1]
    assert render(load_checks(healthy_run(RequestStats()), GENEROUS, 0, 1)).endswith("all SLOs met")


def test_the_p99_spike_reads_locusts_windowed_history(clock: Clock) -> None:
    """20 s at 100 ms, 5 s of fault at 700 ms, 15 s recovered: Locust's 10 s window shows the
    fault until 10 s after it ended."""
    stats = run_with_history(RequestStats(), clock, [100] * 21 + [700] * 5 + [100] * 14)

    series = p99_series(stats.history)

    assert len(series) == 40
    assert series[0] == (T0, 0.0)  # no window yet: Locust records 0
    assert series[15][1] == 100.0
    assert max(p99 for _, p99 in series) == 700.0
    spike = p99_spike(series, steady=(T0 + 11, T0 + 20), faults=(T0 + 21, T0 + 35))
    assert (spike.steady_p99_ms, spike.max_p99_ms) == (100.0, 700.0)
    assert (spike.increase_ms, spike.factor) == (600.0, 7.0)
    calm = p99_spike(series, steady=(T0 + 11, T0 + 20), faults=(T0 + 36, T0 + 39))
    assert calm.max_p99_ms == 100.0
    empty = p99_spike(series, steady=(T0 + 100, T0 + 101), faults=(T0 + 100, T0 + 101))
    assert math.isnan(empty.steady_p99_ms)
    assert math.isnan(empty.max_p99_ms)


def test_history_without_the_p99_gives_no_series() -> None:
    history = [{"time": "2023-11-14T22:13:20Z", "response_time_percentile_0.95": ["x", 40]}]

    assert p99_series(history) == []


@pytest.mark.parametrize("limit", [0.0, 0.5])
def test_no_fallback_passes_any_limit(limit: float) -> None:
    assert fallback_ratio(0, 50, limit).passed
