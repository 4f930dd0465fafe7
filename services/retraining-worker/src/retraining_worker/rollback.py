"""The automatic rollback: a promotion that does worse online goes back to what it replaced.

The drift check calls :func:`maybe_roll_back` after each report. It judges only a version that
became active by a *promotion*: a training whose version passed the gate, or an online
experiment that promoted a variant. A version activated any other way is never judged: one the
monitor itself rolled back to, and one an admin activated (``POST /v1/models/{v}/activate``,
whether a manual rollback or a deliberate choice). Judging those turned the monitor against
itself: after rolling 3 back to 2, version 2 is freshly activated and its rollback target is
3, which still gains hits from the lists it served before, so the monitor re-activated the
version it had just removed; and an admin's rollback was undone within the window.

How a version became active is the ``reason`` its activation gave: ``lua/activate.lua`` writes
it to the version's ``status_reason`` in the same script that moves the pointer (and resets
``activated_at``), so it is never out of step with the activation it describes, and the next
activation overwrites it. Promotions are recognised by the reasons their callers give, named
in ``recsys_shared.registry`` (``is_promotion``).
"""

from __future__ import annotations

import logging

from recsys_shared.registry import ModelRegistry, is_promotion
from recsys_shared.schemas import DriftReport, ModelInfo, ModelStatus
from retraining_worker.config import Settings
from retraining_worker.pruning import rollback_target

log = logging.getLogger(__name__)

#: How this module's own activation reason begins.
ROLLED_BACK = "rolled back automatically"


def _still_active(versions: list[ModelInfo], active: ModelInfo) -> ModelInfo | None:
    """The registry's record of ``active`` if that same activation still holds: an admin may
    have activated another version (or this one again) since the check read it, and a
    rollback computed from the stale record would undo that choice."""
    for info in versions:
        if info.version == active.version:
            current = info.status is ModelStatus.ACTIVE
            same = info.activated_at == active.activated_at
            return info if current and same else None
    return None


def _judged(
    versions: list[ModelInfo], active: ModelInfo, settings: Settings, *, now: float
) -> tuple[ModelInfo, ModelInfo] | None:
    """The active version and the one it replaced, if the active one is to be judged: still
    active, promoted, within the window, and its predecessor can be activated again."""
    current = _still_active(versions, active)
    if current is None or current.activated_at is None or not is_promotion(current.status_reason):
        return None
    if now - current.activated_at.timestamp() > settings.rollback_window_seconds:
        return None
    # A promotion displaced the version serving then, so the target is never a version that
    # a rollback removed (reaching one would take an activation this module does not judge).
    previous = rollback_target(versions, current.version)
    if previous is None or previous.artifact_url is None:
        return None
    return current, previous


def _hit_rates(
    report: DriftReport, mine: int, theirs: int, settings: Settings
) -> tuple[float, float] | None:
    """Both versions' online hit rates, when each has ``rollback_min_events`` to judge by."""
    first, second = report.hit_rate.get(str(mine)), report.hit_rate.get(str(theirs))
    if first is None or second is None or first.hit_rate is None or second.hit_rate is None:
        return None
    if min(first.events, second.events) < settings.rollback_min_events:
        return None
    return first.hit_rate, second.hit_rate


async def maybe_roll_back(
    registry: ModelRegistry,
    report: DriftReport,
    active: ModelInfo,
    settings: Settings,
    *,
    now: float,
) -> str | None:
    """Roll a version promoted within ``rollback_window_seconds`` back to the version it
    replaced when, over enough attributed events, its online hit rate trails that one's by
    more than ``rollback_margin``; returns the reason, or ``None`` when nothing was done."""
    judged = _judged(await registry.list(), active, settings, now=now)
    if judged is None:
        return None
    current, previous = judged
    rates = _hit_rates(report, current.version, previous.version, settings)
    if rates is None or rates[0] >= rates[1] * (1.0 - settings.rollback_margin):
        return None
    reason = (
        f"{ROLLED_BACK}: online hit rate {rates[0]:.3f} of version {current.version} is below "
        f"{rates[1]:.3f} of version {previous.version} by more than {settings.rollback_margin:.0%}"
    )
    await registry.activate(previous.version, reason=reason)
    log.warning(reason)
    return reason
