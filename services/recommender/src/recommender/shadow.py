"""Shadow rankings: a challenger ranks some requests off the response path, never served.

When the gateway marks a request for the shadow (``ExperimentArm.shadow_version``), the served
list is answered first; then, if the CPU budget allows, the shadow version ranks the same
request from the same context and its list is recorded beside the served one (under
``<recommendation id>:shadow``), with its overlap with what was served. Events on the served
list are later attributed to the shadow's list too (by the feature-store), which gives the
shadow's hit rate on real traffic without any user seeing it.

The budget is ``SHADOW_CPU_SHARE`` of one core: a token bucket filled at that rate (up to one
second's worth) and drained by the time each ranking takes; a request that finds it empty is
skipped (counted). Rankings run on the event loop between requests, one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from recommender import metrics
from recsys_shared import keys
from recsys_shared.errors import ModelUnavailable, StoreError, StoreUnavailable
from recsys_shared.experiments.lists import SHADOW_SUFFIX, ExperimentLists
from recsys_shared.features import UserContext
from recsys_shared.schemas import ExperimentArm, RecommendationQuery, ServedList, Strategy

log = logging.getLogger(__name__)

#: Shadow rankings waiting for their turn at most; beyond, requests are skipped.
MAX_WAITING = 64
#: The variant name shadow rankings are counted under.
SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class ShadowJob:
    user_id: str
    query: RecommendationQuery
    context: UserContext
    arm: ExperimentArm
    served_id: str
    served_items: list[str]


class CpuBudget:
    """A token bucket of CPU seconds, filled at ``share`` seconds per second."""

    def __init__(self, share: float, *, burst_seconds: float = 1.0) -> None:
        self.share = share
        self.capacity = share * burst_seconds
        self.tokens = self.capacity
        self._filled_at = time.monotonic()

    def allows(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._filled_at) * self.share)
        self._filled_at = now
        return self.tokens > 0

    def spend(self, seconds: float) -> None:
        self.tokens -= seconds


class ShadowRanker:
    def __init__(
        self,
        rank: Callable[[ShadowJob], Awaitable[list[str] | None]],
        lists: ExperimentLists,
        *,
        cpu_share: float,
    ) -> None:
        self.rank = rank
        self.lists = lists
        self.budget = CpuBudget(cpu_share)
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(MAX_WAITING)
        self._worker: asyncio.Task[None] | None = None

    def submit(self, job: ShadowJob) -> None:
        """Queue a shadow ranking; the served list does not wait for it."""
        if not self.budget.allows():
            metrics.SHADOW_RANKINGS.labels(metrics.ShadowOutcome.OVER_BUDGET).inc()
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            metrics.SHADOW_RANKINGS.labels(metrics.ShadowOutcome.OVER_BUDGET).inc()
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="shadow-rankings")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _drain(self) -> None:
        while not self._queue.empty():
            job = self._queue.get_nowait()
            await asyncio.sleep(0)  # the served list goes out first
            await self._run(job)

    async def _run(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        try:
            ranked = await self.rank(job)
        except ModelUnavailable as error:
            metrics.SHADOW_RANKINGS.labels(metrics.ShadowOutcome.VERSION_UNAVAILABLE).inc()
            log.warning("shadow ranking skipped: %s", error.detail)
            return
        finally:
            spent = time.perf_counter() - started
            self.budget.spend(spent)
            metrics.SHADOW_SECONDS.inc(spent)
        if ranked is None:
            metrics.SHADOW_RANKINGS.labels(metrics.ShadowOutcome.NOT_PERSONALISED).inc()
            return
        await self._record(job, ranked)

    async def _record(self, job: ShadowJob, ranked: list[str]) -> None:
        served = set(job.served_items)
        overlap = len(served.intersection(ranked)) / len(served) if served else 1.0
        record = ServedList.model_construct(
            user_id=job.user_id,
            items=ranked,
            model_version=job.arm.shadow_version,
            strategy=Strategy.PERSONALIZED,
            served_at=time.time(),
            experiment=job.arm.experiment,
            variant=SHADOW,
        )
        try:
            await self.lists.record(
                job.user_id,
                job.arm.experiment,
                [(job.served_id + SHADOW_SUFFIX, record.model_dump_json())],
                [
                    (keys.variant_counter(SHADOW, None, keys.VARIANT_EXPOSURES), 1),
                    # Thousandths: the counters hold integers.
                    (
                        keys.variant_counter(SHADOW, None, keys.SHADOW_OVERLAP),
                        round(overlap * 1000),
                    ),
                ],
            )
        except (StoreUnavailable, StoreError) as error:
            metrics.SHADOW_RANKINGS.labels(metrics.ShadowOutcome.RECORD_LOST).inc()
            log.warning("shadow ranking not recorded: %s", error.detail)
            return
        metrics.SHADOW_RANKINGS.labels(metrics.ShadowOutcome.RANKED).inc()
