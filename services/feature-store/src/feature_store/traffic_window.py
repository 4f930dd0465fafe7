"""The traffic a snapshot's reject and duplicate shares judge: what came in since an earlier
snapshot, not since the data tier began.

The pipeline's counters (events accepted, resent duplicates, events rejected at the door) only
grow. Judged over their whole life, a client that sent bad events for a while keeps a share over
its limit for months, every snapshot refused until good events dilute it; and a fresh burst
after a long clean history never shows. So each snapshot's manifest records the counters as
they were when it was taken (``SnapshotManifest.pipeline_counters``: three integers per kept
snapshot), and the next snapshot judges the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from pydantic import ValidationError

from feature_store.config import Settings
from recsys_shared.artifacts import (
    MANIFEST,
    SNAPSHOTS_FOLDER,
    ArtifactError,
    ArtifactStore,
    snapshot_folder,
    snapshot_order,
)
from recsys_shared.schemas import QualityCheck, SnapshotManifest, TrafficCounts

log = logging.getLogger(__name__)

#: A share over fewer events is noise (one of 0.2 over 100 events errs by about ±0.04), so
#: smaller windows are widened to an earlier snapshot, or reported and not judged.
MIN_WINDOW_EVENTS = 100
#: At most this many of the newest snapshots' manifests are read for a baseline: pruning keeps
#: only a few (``KEEP_SNAPSHOTS``), and this bounds the reads should it not run.
MAX_BASELINES = 16


class Baseline(NamedTuple):
    """An earlier snapshot and the counters it recorded."""

    snapshot_id: str
    created_at: datetime
    counters: TrafficCounts


@dataclass(frozen=True, slots=True)
class Window:
    """The counts a share is judged over, and which traffic they are, in words."""

    counts: TrafficCounts
    description: str


def lifetime(now: TrafficCounts, why: str) -> Window:
    return Window(now, f"over the counters' lifetime ({why})")


def choose_window(now: TrafficCounts, baselines: Sequence[Baseline]) -> Window:
    """The traffic since the newest baseline (``baselines`` newest first) that leaves at least
    :data:`MIN_WINDOW_EVENTS` events: a window too small to judge is widened rather than
    skipped, so a snapshot taken just after a refused one cannot pass on a handful of events.
    If none leaves enough, the widest there is (its shares then go unjudged)."""
    widest: Window | None = None
    for baseline in baselines:
        counts = now.since(baseline.counters)
        if counts is None:
            # Counters went backwards: the data tier was flushed or restored since this
            # snapshot (a data move sums them, never drops them), so neither its record nor an
            # older one counts the same traffic. The lifetime counts are then the traffic since
            # that reset: a true window, judged rather than skipped.
            reset = f"they went backwards since snapshot {baseline.snapshot_id}"
            return widest or lifetime(now, reset)
        taken = baseline.created_at.isoformat(timespec="seconds")
        widest = Window(counts, f"since snapshot {baseline.snapshot_id}, taken {taken}")
        if counts.total >= MIN_WINDOW_EVENTS:
            return widest
    # Snapshots written before the counters were recorded leave nothing to subtract: the
    # lifetime shares, as those versions judged them.
    return widest or lifetime(now, "no earlier snapshot recorded them")


def share_checks(window: Window, settings: Settings) -> list[QualityCheck]:
    """The reject share (of every event received) and the duplicate share (of those that
    passed validation), each over the window."""
    counts = window.counts
    return [
        _share("reject_share", counts.rejected, counts.total, settings.max_reject_share, window),
        _share(
            "duplicate_share",
            counts.duplicates,
            counts.received,
            settings.max_duplicate_share,
            window,
        ),
    ]


def _share(name: str, part: int, whole: int, threshold: float, window: Window) -> QualityCheck:
    value = part / whole if whole else 0.0
    over = f"over {whole} events {window.description}"
    if whole < MIN_WINDOW_EVENTS:
        # Reported, so the report shows what was seen, but passed: a handful of events says
        # nothing of the pipeline, and the data's own checks still judge the data.
        detail = f"{name} {value:.4g} not judged: {over}, fewer than {MIN_WINDOW_EVENTS}"
        return QualityCheck(
            name=name, passed=True, value=value, threshold=float(threshold), detail=detail
        )
    passed = value <= threshold
    verdict = f"{'≤' if passed else '>'} maximum {threshold:.4g}"
    return QualityCheck(
        name=name,
        passed=passed,
        value=value,
        threshold=float(threshold),
        detail=f"{name} {value:.4g} {verdict} {over}",
    )


def traffic_window(store: ArtifactStore, now: TrafficCounts, snapshot_id: str) -> Window:
    """The window snapshot ``snapshot_id`` judges (blocking: reads the store)."""
    return choose_window(now, read_baselines(store, exclude=snapshot_id))


def read_baselines(store: ArtifactStore, exclude: str) -> list[Baseline]:
    """The newest kept snapshots that recorded their counters, newest first by when they were
    taken."""
    ordered = sorted(
        (order, name)
        for name in store.list_dirs(SNAPSHOTS_FOLDER)
        if name != exclude and (order := snapshot_order(name)) is not None
    )
    found = [_baseline(store, name) for _, name in ordered[-MAX_BASELINES:]]
    return sorted(
        (baseline for baseline in found if baseline is not None),
        key=lambda baseline: baseline.created_at,
        reverse=True,
    )


def _baseline(store: ArtifactStore, name: str) -> Baseline | None:
    try:
        raw = store.read_bytes(f"{snapshot_folder(name)}/{MANIFEST}")
        manifest = SnapshotManifest.model_validate_json(raw)
    except (ArtifactError, ValidationError) as error:
        # Pruned while being read, still being written, or broken: no baseline, and no reason
        # to refuse the snapshot being taken.
        log.warning("snapshot %s gives no baseline for the shares: %s", name, error)
        return None
    if manifest.pipeline_counters is None:
        return None  # written before the counters were recorded
    created_at = manifest.created_at
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)  # comparable with every other
    return Baseline(manifest.snapshot_id, created_at, manifest.pipeline_counters)
