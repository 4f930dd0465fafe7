"""Running experiments from the gateway: who sees which variant, what was served, what next.

- **Assignment** (every replica, no shared state): the running experiment is re-read every
  ``EXPERIMENT_REFRESH_SECONDS``; a user's variant is a hash of (experiment, user) against the
  current shares (``recsys_shared.experiments.assignment``), and the list is asked for with the
  variant's pinned version (an ``ExperimentArm``).
- **Exposures**: every list served as an assigned user's variant (cached ones included; a
  fallback is not the variant's) is counted in the user's partition; the counts of one
  event-loop turn go out together.
- **Decisions** (one replica at a time, under ``EXPERIMENT_LOCK``): every
  ``EXPERIMENT_CHECK_SECONDS`` the counters are read and ``recsys_shared.experiments.decision``
  says what changes: a canary step, a promotion (the version is activated), a rollback, an end.
  Each step is saved with the experiment, noted in the registry's lineage of the versions
  involved, and logged. Ended experiments are deleted after ``EXPERIMENT_RETENTION_DAYS``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime

from gateway import metrics
from recsys_shared import keys
from recsys_shared.background import fire_and_forget, repeat
from recsys_shared.errors import RecsysError, StoreUnavailable
from recsys_shared.experiments import decision
from recsys_shared.experiments.assignment import assign
from recsys_shared.experiments.report import build_report
from recsys_shared.experiments.store import Counters, ExperimentStore, variant_names
from recsys_shared.locks import RedisLock
from recsys_shared.registry import ModelRegistry, promoted_by_experiment
from recsys_shared.schemas import (
    Decision,
    Experiment,
    ExperimentArm,
    ExperimentMode,
    StoredExperiment,
)

log = logging.getLogger(__name__)

#: How often the replica that decides looks for experiments past their retention.
RETENTION_EVERY_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Running:
    """What assignment needs of the running experiment."""

    id: str
    mode: ExperimentMode
    names: list[str]
    versions: list[int]
    shares: list[float]

    @classmethod
    def of(cls, stored: StoredExperiment) -> Running:
        definition = stored.definition
        return cls(
            id=stored.id,
            mode=definition.mode,
            names=variant_names(definition.mode, len(definition.variants)),
            versions=[variant.model_version for variant in definition.variants],
            shares=stored.state.shares,
        )

    def arm(self, user_id: str) -> ExperimentArm:
        if self.mode is ExperimentMode.SHADOW:
            # Everyone is served the control; a share of requests is also ranked by the shadow.
            shadowed = random.random() < self.shares[1]  # sampling, not security
            return ExperimentArm(
                experiment=self.id,
                variant=self.names[0],
                model_version=self.versions[0],
                shadow_version=self.versions[1] if shadowed else None,
            )
        index = assign(self.id, user_id, self.shares)
        return ExperimentArm(
            experiment=self.id, variant=self.names[index], model_version=self.versions[index]
        )


class ExposureCounter:
    """Lists served per (experiment, variant, partition), written once per event-loop turn."""

    def __init__(self, store: ExperimentStore) -> None:
        self.store = store
        self._pending: dict[tuple[str, str], list[str]] = {}
        self._scheduled = False

    def served(self, arm: ExperimentArm, user_id: str) -> None:
        self._pending.setdefault((arm.experiment, arm.variant), []).append(user_id)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for (experiment_id, variant), user_ids in pending.items():
            fire_and_forget(self.store.add_exposures(experiment_id, variant, user_ids), _count_lost)


def _count_lost(error: BaseException) -> None:
    metrics.UPSTREAM_ERRORS.labels("experiment-exposures", type(error).__name__).inc()


@dataclass(frozen=True, slots=True)
class _Promotion:
    experiment: StoredExperiment
    version: int
    ended_at: datetime


# eq=False: one live runtime per replica (tasks, a lock), compared by identity.
@dataclass(eq=False)
class ExperimentRuntime:
    store: ExperimentStore
    registry: ModelRegistry
    _: KW_ONLY
    refresh_seconds: float
    check_seconds: float
    tau: float
    alpha: float
    retention_days: float
    running: Running | None = field(init=False, default=None)
    exposures: ExposureCounter = field(init=False)
    _lock: RedisLock = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _exported: set[tuple[str, str]] = field(init=False, default_factory=set)
    _next_retention: float = field(init=False, default=0.0)
    #: A promotion whose activation Redis did not answer: retried on the next checks.
    _unactivated: _Promotion | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.exposures = ExposureCounter(self.store)
        self._lock = RedisLock(self.store.redis, keys.EXPERIMENT_LOCK, ttl_seconds=30.0)

    def arm(self, user_id: str) -> ExperimentArm | None:
        """The variant the user sees now, if an experiment runs."""
        running = self.running
        return running.arm(user_id) if running is not None else None

    def report(self, stored: StoredExperiment, counters: Counters) -> Experiment:
        return build_report(stored, counters, tau=self.tau, alpha=self.alpha)

    async def report_now(self, stored: StoredExperiment) -> Experiment:
        """The experiment as the admin API answers it: with its counters as they are now."""
        return self.report(stored, await self.store.counters(stored.id))

    async def refresh(self) -> None:
        stored = await self.store.running()
        running = stored is not None and stored.state.decision is Decision.RUNNING
        self.running = Running.of(stored) if stored is not None and running else None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.refresh_seconds, self.refresh), name="exp-read"),
            asyncio.create_task(self._every(self.check_seconds, self.check), name="exp-decide"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._lock.release()  # only if ours: the next replica decides at once
        except RecsysError as error:
            log.info("experiment lock left to expire: %s", error.detail)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` every ``seconds``; a failure is logged and tried again next time."""

        def failed(error: Exception) -> None:
            log.warning("experiments: %s failed: %s", job.__name__, error)

        await repeat(job, pause=seconds, survives=(RecsysError, OSError), on_error=failed)

    async def check(self) -> None:
        """Export the running experiment's figures; then, on one replica at a time, decide
        what it does next and (hourly) forget experiments past their retention."""
        stored = await self.store.running()
        counters = await self.store.counters(stored.id) if stored is not None else None
        self._export((stored, counters) if stored is not None and counters is not None else None)
        if not (await self._lock.renew() or await self._lock.acquire()):
            return
        await self._retry_promotion()
        if stored is not None and counters is not None:
            outcome = decision.decide(
                stored, counters, now=datetime.now(UTC), tau=self.tau, alpha=self.alpha
            )
            if outcome is not None:
                await self.apply(stored, outcome)
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_EVERY_SECONDS
            await self._forget_old()

    async def apply(self, stored: StoredExperiment, outcome: decision.Outcome) -> bool:
        """Save the new state, then activate a promoted version, and note the step in the
        registry's lineage and the log. False if the experiment had ended meanwhile."""
        if not await self.store.save_state(stored.id, outcome.state):
            await self.refresh()
            return False
        step = outcome.state.steps[-1]
        definition = stored.definition
        note = f"experiment {stored.id} ({definition.name}, {definition.mode}): {step.note}"
        if outcome.activate is not None:
            note += await self._promote(_Promotion(stored, outcome.activate, step.at))
        log.info("%s", note)
        for variant in definition.variants:
            try:
                await self.registry.note_experiment(variant.model_version, note)
            except StoreUnavailable as error:
                log.warning("experiment note not written: %s", error.detail)
        if outcome.state.ended_at is not None:
            metrics.EXPERIMENT_DECISIONS.labels(
                definition.mode.value, outcome.state.decision.value
            ).inc()
        await self.refresh()
        return True

    async def _promote(self, promotion: _Promotion) -> str:
        """Activate the promoted version; the note's ending. The experiment has ended as
        promoted already: if Redis does not answer, the activation is kept to retry."""
        stored, version = promotion.experiment, promotion.version
        self._unactivated = None
        try:
            previous = await self.registry.activate(
                version,
                promoted_by_experiment(stored.id, stored.definition.name),
                rejected_too=True,
            )
        except StoreUnavailable as error:
            self._unactivated = promotion
            log.error("experiment %s: activating version %d failed, will retry", stored.id, version)
            return f"; activating version {version} failed: {error.detail} (retried)"
        except RecsysError as error:  # unknown, or its artifact pruned since: final
            log.error("experiment %s: activating version %d failed", stored.id, version)
            return f"; activating version {version} failed: {error.detail}"
        return f"; version {version} activated (was {previous})"

    async def _retry_promotion(self) -> None:
        """Activate a promotion Redis refused earlier, unless a version was activated since
        the experiment ended: that later choice (an admin's, say) stands."""
        promotion = self._unactivated
        if promotion is None:
            return
        active = await self.registry.active_version()
        current = await self.registry.get(active) if active is not None else None
        activated_at = current.activated_at if current is not None else None
        if current is not None and activated_at is not None and activated_at > promotion.ended_at:
            self._unactivated = None
            if current.version == promotion.version:  # it was: only the answer was lost
                return
            log.warning(
                "experiment %s: version %d not activated: version %d was activated since",
                promotion.experiment.id,
                promotion.version,
                current.version,
            )
            return
        log.info("experiment %s%s", promotion.experiment.id, await self._promote(promotion))

    async def _forget_old(self) -> None:
        cutoff = time.time() - self.retention_days * 86_400
        for stored in await self.store.all():
            ended = stored.state.ended_at
            if ended is not None and ended.timestamp() < cutoff:
                await self.store.forget(stored.id)
                log.info("forgot experiment %s (ended %s)", stored.id, ended.isoformat())

    def _export(self, current: tuple[StoredExperiment, Counters] | None) -> None:
        """Per-variant gauges of the running experiment (none once it ends)."""
        exported: set[tuple[str, str]] = set()
        if current is not None:
            stored, counters = current
            report = self.report(stored, counters)
            elapsed = (datetime.now(UTC) - stored.created_at).total_seconds()
            metrics.EXPERIMENT_PROGRESS.labels(stored.id).set(
                elapsed / stored.definition.max_duration_seconds
            )
            exported.add((stored.id, ""))
            figures = [
                (v.name, v.exposures, v.clicks, v.conversions, v.share, v.rate)
                for v in report.variants
            ]
            if report.shadow is not None:
                shadow = report.shadow
                share = stored.state.shares[1]
                figures.append(("shadow", shadow.rankings, shadow.hits, 0, share, shadow.hit_rate))
            for name, exposures, clicks, conversions, share, rate in figures:
                labels = (stored.id, name)
                exported.add(labels)
                metrics.EXPERIMENT_EXPOSURES.labels(*labels).set(exposures)
                metrics.EXPERIMENT_CLICKS.labels(*labels).set(clicks)
                metrics.EXPERIMENT_CONVERSIONS.labels(*labels).set(conversions)
                metrics.EXPERIMENT_SHARE.labels(*labels).set(share)
                metrics.EXPERIMENT_RATE.labels(*labels).set(
                    rate if rate is not None else float("nan")
                )
        for labels in self._exported - exported:
            _remove(labels)
        self._exported = exported


def _remove(labels: tuple[str, str]) -> None:
    experiment_id, variant = labels
    if not variant:
        metrics.EXPERIMENT_PROGRESS.remove(experiment_id)
        return
    for family in (
        metrics.EXPERIMENT_EXPOSURES,
        metrics.EXPERIMENT_CLICKS,
        metrics.EXPERIMENT_CONVERSIONS,
        metrics.EXPERIMENT_SHARE,
        metrics.EXPERIMENT_RATE,
    ):
        family.remove(experiment_id, variant)
