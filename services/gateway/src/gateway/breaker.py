"""A circuit breaker: after repeated failures, calls to a neighbour stop for a while instead of
each waiting for its timeout. The gateway keeps one per recommender replica
(``gateway.replicas``) and one for the Redis of its cached lists (``gateway.cache``)."""

from __future__ import annotations

import logging
import time

from gateway import metrics

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed → open after ``failures`` consecutive failures; after ``reset_seconds`` one trial
    request is let through (half-open); its success closes the breaker, its failure re-opens it."""

    def __init__(self, name: str, *, failures: int, reset_seconds: float) -> None:
        self.name = name
        self.threshold = failures
        self.reset_seconds = reset_seconds
        self.failures = 0
        self.opened_at: float | None = None
        metrics.BREAKER_OPEN.labels(name).set(0)  # the series exists before anything fails

    def allows(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.reset_seconds:
            self.opened_at = time.monotonic()  # half-open: this caller is the one trial
            return True
        return False

    def succeeded(self) -> None:
        if self.opened_at is not None:
            log.info("circuit to %s closed", self.name)
            metrics.BREAKER_OPEN.labels(self.name).set(0)
        self.failures = 0
        self.opened_at = None

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.opened_at is None:
                log.warning("circuit to %s opened after %d failures", self.name, self.failures)
            self.opened_at = time.monotonic()
            metrics.BREAKER_OPEN.labels(self.name).set(1)
