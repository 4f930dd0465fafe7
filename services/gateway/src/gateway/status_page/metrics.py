"""What the status page reads of this gateway process: response-cache lookups and request
latency per route, from its own Prometheus registry (what its ``/metrics`` shows)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY

LATENCY_METRIC = "http_request_duration_seconds"
CACHE_METRIC = "recsys_cache_requests"
PERCENTILES = (0.5, 0.95, 0.99)


def histogram_quantile(quantile: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """A quantile from cumulative histogram buckets ``(upper bound, count)``, as Prometheus'
    ``histogram_quantile`` does: find the bucket holding the rank and interpolate linearly
    inside it (the first bucket starts at 0). A rank in the ``+Inf`` bucket gives the highest
    finite bound. None when nothing was observed."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound  # pragma: no cover - the last bucket holds every observation


@dataclass(frozen=True)
class RouteLatency:
    method: str
    route: str
    count: int
    percentiles: dict[float, float | None]


@dataclass(frozen=True)
class ProcessMetrics:
    cache: dict[str, int]
    latency: list[RouteLatency]

    @property
    def cache_hit_ratio(self) -> float | None:
        lookups = sum(self.cache.values())
        return self.cache.get("hit", 0) / lookups if lookups else None


def read_process_metrics(registry: Any = REGISTRY) -> ProcessMetrics:
    """Cache lookups by result and latency percentiles per route, from this process's
    Prometheus registry (what its ``/metrics`` shows)."""
    cache: dict[str, int] = {}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for family in registry.collect():
        if family.name == CACHE_METRIC:
            for sample in family.samples:
                if sample.name == f"{CACHE_METRIC}_total":
                    result = sample.labels.get("result", "unknown")
                    cache[result] = cache.get(result, 0) + int(sample.value)
        elif family.name == LATENCY_METRIC:
            for sample in family.samples:
                if sample.name == f"{LATENCY_METRIC}_bucket":
                    labels = (sample.labels.get("method", ""), sample.labels.get("route", ""))
                    bound = float(sample.labels["le"])
                    buckets.setdefault(labels, []).append((bound, float(sample.value)))
    latency = []
    for (method, template), series in buckets.items():
        count = int(max(count for _, count in series))
        if count:
            percentiles = {q: histogram_quantile(q, series) for q in PERCENTILES}
            latency.append(RouteLatency(method, template, count, percentiles))
    latency.sort(key=lambda entry: (-entry.count, entry.route, entry.method))
    return ProcessMetrics(cache=cache, latency=latency)
