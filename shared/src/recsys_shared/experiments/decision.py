"""What an experiment does next, from its counters: nothing, a canary step, or an end.

Pure functions of the stored experiment and its counters; the gateway's decider
(``gateway.experiments``) applies what they return, under a lock, and the registry records
each step.

- **A/B**: once every variant has ``min_exposures``, a treatment significantly better than the
  control on the always-valid sequence is *promoted* (the best one, if several are), and when
  every treatment is significantly worse the experiment is *rolled back* (the control stays).
  The treatments share the error rate (``statistics.versus_control``).
- **Canary**: the canary's share climbs ``CANARY_SCHEDULE`` (5% → 25% → 50%); it moves up a
  step once the canary has served ``min_exposures`` lists at the current one without being
  significantly worse, and after the last step it is *promoted* (100%). It is *rolled back*
  as soon as it is significantly worse, at any step: the comparison uses every exposure since
  the start, compared within each step (``report.strata``), and is valid however often it is
  made.
- **Shadow**: nothing to decide; it ends when stopped or at its maximum duration.

Any mode still running at ``max_duration_seconds`` ends *inconclusive*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recsys_shared import keys
from recsys_shared.experiments.report import Counts, counts, strata
from recsys_shared.experiments.statistics import Difference, versus_control
from recsys_shared.experiments.store import Counters, variant_names
from recsys_shared.schemas import (
    CANARY_SCHEDULE,
    Decision,
    ExperimentMode,
    ExperimentState,
    ExperimentStep,
    StoredExperiment,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The experiment's new state, and the version to activate (a promotion), if any."""

    state: ExperimentState
    activate: int | None = None


def decide(
    stored: StoredExperiment, counters: Counters, *, now: datetime, tau: float, alpha: float
) -> Outcome | None:
    """What changes now; None if nothing does."""
    state = stored.state
    if state.decision is not Decision.RUNNING:
        return None
    definition = stored.definition
    if (now - stored.created_at).total_seconds() >= definition.max_duration_seconds:
        return _end(
            stored, now, Decision.INCONCLUSIVE, "reached max_duration_seconds without a decision"
        )
    if definition.mode is ExperimentMode.SHADOW:
        return None
    names = variant_names(definition.mode, len(definition.variants))
    exposures = [counters.get(name, keys.VARIANT_EXPOSURES) for name in names]
    comparisons = [
        versus_control(
            strata(stored, counters, name), treatments=len(names) - 1, tau=tau, alpha=alpha
        )
        for name in names[1:]
    ]
    if definition.mode is ExperimentMode.CANARY:
        return _canary(stored, exposures, comparisons[0], counts(stored, counters), now)
    return _ab(stored, names, exposures, comparisons, now)


def stop(stored: StoredExperiment, now: datetime, reason: str) -> Outcome:
    """An admin's stop: the active version stays whatever it is."""
    return _end(stored, now, Decision.STOPPED, reason)


def _canary(
    stored: StoredExperiment,
    exposures: list[int],
    comparison: Difference | None,
    counted: Counts,
    now: datetime,
) -> Outcome | None:
    state, definition = stored.state, stored.definition
    canary_version = definition.variants[1].model_version
    if comparison is not None and comparison.verdict == "worse":
        return _end(
            stored,
            now,
            Decision.ROLLED_BACK,
            f"canary (version {canary_version}) significantly worse: "
            f"{_described(comparison)} after {exposures[1]} of {sum(exposures)} exposures",
        )
    started = state.step_started_exposures or [0, 0]
    if exposures[1] - started[1] < definition.min_exposures:
        return None
    share = state.shares[1]
    following = [step for step in CANARY_SCHEDULE if step > share + 1e-9]
    if not following or following[0] >= 1.0:
        return _end(
            stored,
            now,
            Decision.PROMOTED,
            f"canary (version {canary_version}) completed the schedule not worse: "
            f"{_described(comparison)}",
            activate=canary_version,
        )
    shares = [1.0 - following[0], following[0]]
    step = ExperimentStep(
        at=now,
        shares=shares,
        note=f"canary share {share:.0%} → {following[0]:.0%} after {exposures[1]} "
        f"canary exposures, not worse: {_described(comparison)}",
    )
    moved = state.model_copy(
        update={
            "shares": shares,
            "step_started_exposures": exposures,
            "step_counts": [*state.step_counts, counted],
            "steps": [*state.steps, step],
        }
    )
    return Outcome(moved)


def _ab(
    stored: StoredExperiment,
    names: list[str],
    exposures: list[int],
    comparisons: list[Difference | None],
    now: datetime,
) -> Outcome | None:
    definition = stored.definition
    if min(exposures) < definition.min_exposures:
        return None
    verdicts = [comparison.verdict if comparison else "undecided" for comparison in comparisons]
    better = [
        (comparison.value, index)
        for index, comparison in enumerate(comparisons, start=1)
        if comparison is not None and comparison.verdict == "better"
    ]
    if better:
        _, winner = max(better)
        version = definition.variants[winner].model_version
        return _end(
            stored,
            now,
            Decision.PROMOTED,
            f"{names[winner]} (version {version}) significantly better than the control: "
            f"{_described(comparisons[winner - 1])}",
            activate=version,
        )
    if all(verdict == "worse" for verdict in verdicts):
        return _end(
            stored,
            now,
            Decision.ROLLED_BACK,
            "every treatment significantly worse than the control",
        )
    return None


def _end(
    stored: StoredExperiment,
    now: datetime,
    decision: Decision,
    reason: str,
    *,
    activate: int | None = None,
) -> Outcome:
    state = stored.state
    if decision is Decision.PROMOTED and activate is not None:
        shares = [0.0] * len(state.shares)
        shares[[v.model_version for v in stored.definition.variants].index(activate)] = 1.0
    elif decision is Decision.ROLLED_BACK:
        shares = [1.0] + [0.0] * (len(state.shares) - 1)
    else:
        shares = state.shares
    step = ExperimentStep(at=now, shares=shares, note=f"{decision.value}: {reason}")
    ended = state.model_copy(
        update={
            "decision": decision,
            "reason": reason,
            "shares": shares,
            "steps": [*state.steps, step],
            "ended_at": now,
        }
    )
    return Outcome(ended, activate=activate)


def _described(comparison: Difference | None) -> str:
    if comparison is None:
        return "no data yet"
    low, high = comparison.low, comparison.high
    return (
        f"difference {comparison.value:+.4f} "
        f"(always-valid {comparison.level} interval {low:+.4f} … {high:+.4f})"
    )
