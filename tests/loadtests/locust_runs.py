"""Runs recorded into Locust's own statistics objects, as its runner records them.

Each request goes through ``RequestStats.log_request`` (and ``log_error`` when it failed), so
percentiles, failure ratios, the error table and the 10-second window are Locust's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import locust.stats
from journeys import POPULAR_ITEMS, SERVER_ERROR, USER_RECOMMENDATIONS
from locust.exception import CatchResponseError
from locust.stats import RequestStats
from locust.util.date import format_utc_timestamp

T0 = 1_700_000_000  # a whole second, so history timestamps fall on the simulated seconds
RECOMMENDATIONS = ("GET", USER_RECOMMENDATIONS)
EVENTS = ("POST", "/v1/events")
POPULAR = ("GET", POPULAR_ITEMS)


def log(stats: RequestStats, endpoint: tuple[str, str], ms: int, count: int = 1) -> None:
    for _ in range(count):
        stats.log_request(endpoint[0], endpoint[1], ms, 1000)


def fail(stats: RequestStats, endpoint: tuple[str, str], error: str, count: int = 1) -> None:
    """Failed requests, as Locust's runner logs a ``response.failure(error)``."""
    for _ in range(count):
        stats.log_request(endpoint[0], endpoint[1], 5, 100)
        stats.log_error(endpoint[0], endpoint[1], CatchResponseError(error))


def server_error(status: int) -> str:
    return SERVER_ERROR.format(status=status, title="Upstream unavailable")


def healthy_run(stats: RequestStats, *, failures: int = 0) -> RequestStats:
    """1,000 requests: p95 40 ms, p99 240 ms (the slow ones are recommendations)."""
    log(stats, RECOMMENDATIONS, 40, 580)
    log(stats, RECOMMENDATIONS, 240, 20)
    log(stats, EVENTS, 20, 400 - failures)
    fail(stats, EVENTS, "HTTP 422 (unexpected): Invalid input", failures)
    return stats


@dataclass
class Clock:
    """The time Locust's statistics module sees (its sliding window is keyed by second); the
    ``clock`` fixture installs it."""

    now: float = T0

    def time(self) -> float:
        return self.now


def run_with_history(
    stats: RequestStats, clock: Clock, per_second: list[int], users: int = 20
) -> RequestStats:
    """One second per entry of ``per_second`` (the latency of that second's 25 requests), each
    closed by the history point Locust's history greenlet takes."""
    runner = SimpleNamespace(stats=stats, user_count=users)
    for second, ms in enumerate(per_second):
        clock.now = T0 + second + 0.5
        log(stats, RECOMMENDATIONS, ms, 25)
        locust.stats.update_stats_history(runner, format_utc_timestamp(clock.now))  # type: ignore[arg-type]
    return stats
