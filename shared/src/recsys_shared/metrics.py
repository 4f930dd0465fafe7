"""Metric families every service exports, with conventional Prometheus names and units.

Service-specific families live in each service's own ``metrics`` module; the ones here are the
same everywhere so one dashboard and one set of alert rules read every service alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import product

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info

__all__ = [
    "BUILD_INFO",
    "EPHEMERAL_WRITES_SHED",
    "EPHEMERAL_WRITES_SHEDDING",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "LOST_RECOMMENDATION_RECORDS",
    "REDIS_ERRORS",
    "REDIS_MEMORY_USED_RATIO",
    "REGISTRY",
    "at_zero",
]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from request received to response sent, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "redis_errors_total",
    "Redis commands that failed (connection, timeout, out of memory), by error type.",
    ["error"],
)
LOST_RECOMMENDATION_RECORDS = Counter(
    "recsys_recommendation_records_lost_total",
    "Served lists whose record (for attributing events to them) Redis refused.",
)
REDIS_MEMORY_USED_RATIO = Gauge(
    "recsys_redis_memory_used_ratio",
    "Redis used_memory / maxmemory as this process last read it (0 without a maxmemory), "
    "by Redis: main, or ephemeral (cached lists and list records, when they live apart).",
    ["redis"],
)
EPHEMERAL_WRITES_SHED = Counter(
    "recsys_ephemeral_writes_shed_total",
    "Cache entries and list records not written because Redis was near maxmemory, by kind.",
    ["kind"],
)
EPHEMERAL_WRITES_SHEDDING = Gauge(
    "recsys_ephemeral_writes_shedding",
    "1 while this process sheds cache entries and list records (Redis near maxmemory), else 0.",
)
BUILD_INFO = Info("recsys_build", "Service name and code version of this process.")


def at_zero(family: Counter, *label_values: Iterable[str]) -> None:
    """Export every combination of ``label_values`` at 0 from start-up: an alert's or a
    dashboard's ``rate()`` then sees 0 before the first increment, not nothing."""
    for labels in product(*label_values):
        family.labels(*labels)
