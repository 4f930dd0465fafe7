"""The report of `make bench`: every figure printed beside its baseline and target, and
written to reports/bench.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_latency import ROUNDS
from bench_wrk import CONNECTIONS, DURATION, say

from recsys_shared.testing import CLIENT_KEY

ROOT = Path(__file__).resolve().parent.parent


def report(figures: dict[str, Any]) -> None:
    figures = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}",
        "wrk": f"2 threads, {CONNECTIONS} connections, {DURATION} s, {ROUNDS} rounds",
        "api_key": CLIENT_KEY,
        **figures,
    }
    path = ROOT / "reports" / "bench.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    say(f"\nbenchmarks — {figures['machine']}, {figures['date']}")
    say(f"  ratios are the median of {ROUNDS} rounds; req/s are those of the median round")
    before, after = figures["machine_before"], figures["machine_after"]
    say(
        f"  cores available (a fixed loop alone vs two at once): {before['cores_available']} "
        f"before the throughput rounds, {after['cores_available']} after"
    )
    _synthetic(figures)
    _movielens(figures["movielens"])
    _model(figures)
    say(f"  written to {path.relative_to(ROOT)}")


def _synthetic(figures: dict[str, Any]) -> None:
    say("synthetic (twenty taste clusters, k=10, one API key, rate limit off):")
    base = figures["baseline_one_redis_get"]["requests_per_second"]
    redis_py = figures["baseline_with_redis_py"]["requests_per_second"]
    say(
        f"  baseline (bare FastAPI + one Redis GET):  {base:>7,} req/s "
        f"(with redis-py's client instead: {redis_py:,} req/s)"
    )
    for label, name in (
        ("cached recommendations via the gateway", "cached_recommendations"),
        ("uncached personalised, one replica", "uncached_recommendations"),
        ("uncached personalised, two replicas", "uncached_two_replicas"),
    ):
        _ratio_line(label, figures[name])
    cached = figures["cached_recommendations"]
    say(
        f"  cached vs the redis-py baseline: {cached['ratio_to_redis_py_baseline']:.2f}x "
        "(1.44x before the services moved to valkey-glide; a fall of at most 5% is allowed)"
    )
    _half_peak_line(figures["uncached_at_half_peak"])


def _movielens(figures: dict[str, Any]) -> None:
    say(
        "MovieLens (the demo of `make run`: real users, k 5..44, offset 0..200, "
        f"{figures['api_keys']} client keys, rate limit on at its default):"
    )
    base = figures["baseline_with_redis_py"]["requests_per_second"]
    say(f"  baseline (bare FastAPI + redis-py GET):   {base:>7,} req/s")
    hops = figures["two_hops_no_work"]
    say(
        f"  two bare endpoints, one calling the other: {hops['requests_per_second']:>6,} req/s = "
        f"{hops['ratio_to_baseline']:.2f}x baseline (the uncached ceiling: two services, no work;"
        f" rounds {hops['ratios_per_round']})"
    )
    _ratio_line("cached recommendations via the gateway", figures["cached_recommendations"])
    uncached = figures["uncached_recommendations"]
    _ratio_line("uncached personalised, one replica", uncached)
    say(
        f"  CPU per uncached list: gateway {uncached['gateway_cpu_us_per_request']} us, "
        f"recommender {uncached['recommender_cpu_us_per_request']} us"
    )
    _half_peak_line(figures["uncached_at_half_peak"])
    cores = figures["machine_after"]["cores_available"]
    say(f"  cores available after the MovieLens rounds: {cores}")
    say("  uncached lists one at a time, one replica, by the user's history (up to HISTORY_CAP):")
    for user in figures["by_history_length"]:
        say(
            f"    {user['history']:>5,} items ({user['user']}): p50 {user['p50_ms']} ms, "
            f"p90 {user['p90_ms']} ms; CPU per list gateway {user['gateway_cpu_us_per_list']} us, "
            f"recommender {user['recommender_cpu_us_per_list']} us; {user['cached']} cached"
        )


def _ratio_line(label: str, figure: dict[str, Any]) -> None:
    target = figure.get("target_ratio")
    goal = f"target >= {target:.2f}; " if target else ""
    say(
        f"  {label + ':':<42}{figure['requests_per_second']:>7,} req/s = "
        f"{figure['ratio_to_baseline']:.2f}x baseline ({goal}hit ratio {figure['hit_ratio']};"
        f" rounds {figure['ratios_per_round']})"
    )


def _half_peak_line(half: dict[str, Any]) -> None:
    say(
        f"  uncached at half of peak ({half['rate_per_second']} req/s): p50 {half['p50_ms']} ms, "
        f"p99 {half['p99_ms']} ms (target <= {half['target_p99_ms']} ms; "
        f"runs {half['p99_ms_per_run']}), errors {half['errors']}"
    )


def _model(figures: dict[str, Any]) -> None:
    score, fresh, big = figures["scoring"], figures["freshness"], figures["scale"]
    say(
        f"  scoring {score['items']} items: {score['ours_us_per_user']} us vs bare numpy "
        f"{score['bare_numpy_us_per_user']} us = {score['ratio']:.2f}x (target <= 2x)"
    )
    say(
        f"  freshness (202 -> list reflects the event): p50 {fresh['p50_ms']} ms, "
        f"p95 {fresh['p95_ms']} ms (target <= 1000 ms)"
    )
    say(
        f"  scale 100k items x 1M users: {big['resident_memory_mb']} MB resident "
        f"({big['factor_arrays_mb']} MB of factors), p50 {big['p50_ms']} ms, p99 {big['p99_ms']} ms"
    )
