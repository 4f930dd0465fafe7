"""The drift monitor: recent traffic against the active model's training data. Plain functions.

The feature-store's apply script counts every applied event into hour buckets of its partition
(items, users, event types, online hits per serving version; see ``recsys_shared.keys``). A
check sums the last ``drift_window_hours`` buckets of every partition and compares them with
what the active model was trained on: the item distribution of its snapshot's newest
interactions (PSI over the top items, as many as the window's size supports, plus an "other"
bucket, ``psi.py``; see :meth:`TrainingProfile.reference_counts`) and the users and items its
id tables know. Past a threshold it enqueues a retrain, at most once per cool-down across every
monitor (a Redis ``SET NX EX``); the training itself is serialised by the training lock. Each
check also lets ``rollback.py`` judge a recent promotion by its online hit rate. The Celery
task only calls :func:`run_drift_check`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from recsys_shared import keys
from recsys_shared.artifacts import (
    IDS_FILE,
    MANIFEST,
    SNAPSHOT_FILE,
    ArtifactError,
    ArtifactStore,
    load_npz,
    model_folder,
    sha256,
    snapshot_folder,
)
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import DriftReport, ModelInfo, OnlineHitRate
from retraining_worker import metrics
from retraining_worker.config import Settings
from retraining_worker.psi import psi, top_items_for
from retraining_worker.rollback import maybe_roll_back

log = logging.getLogger(__name__)

#: Enqueues a TRAIN_MODEL task and returns its id (Celery's ``send_task`` in the worker).
Send = Callable[[], str]


# ── the recent window ─────────────────────────────────────────────────────────────────────
@dataclass
class Window:
    first_hour: int
    hours: int
    items: Counter[str] = field(default_factory=Counter)
    users: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    hits: dict[str, OnlineHitRate] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(self.types.values())


async def read_window(
    client: RedisClient, partitions: keys.Partitions, *, now: float, hours: int
) -> Window:
    """Sum the hour buckets of the last ``hours`` hours (the current, partial one included)
    over every partition."""
    last = keys.drift_hour(now)
    window = Window(first_hour=last - hours + 1, hours=hours)
    commands: list[tuple[str, str]] = []
    for hour in range(window.first_hour, last + 1):
        for partition in partitions.all:
            bucket = partition.drift(hour)
            commands += [
                ("HGETALL", bucket.items),
                ("HGETALL", bucket.users),
                ("HGETALL", bucket.types),
                ("HGETALL", bucket.hits),
            ]
    rows: list[dict[str, str]] = await client.execute_many(commands)
    hits: Counter[str] = Counter()
    for index in range(0, len(rows), 4):
        items, users, types, hit_counts = rows[index : index + 4]
        window.items.update({item: int(count) for item, count in items.items()})
        window.users.update({user: int(count) for user, count in users.items()})
        window.types.update({kind: int(count) for kind, count in types.items()})
        hits.update({name: int(count) for name, count in hit_counts.items()})
    versions = {name.rpartition(":")[0] for name in hits}
    for version in sorted(versions):
        events_field, hits_field = keys.hit_fields(version)
        served, hit = hits[events_field], hits[hits_field]
        window.hits[version] = OnlineHitRate(
            events=served, hits=hit, hit_rate=hit / served if served else None
        )
    return window


# ── the active model's training data ──────────────────────────────────────────────────────
@dataclass(frozen=True)
class TrainingProfile:
    """What a model version learnt from: its snapshot's items and, newest first, the item of
    each interaction (``None`` when the snapshot was garbage-collected), and the users and
    items it knows (``None``: unreadable)."""

    version: int
    snapshot_id: str
    item_ids: npt.NDArray[np.str_] | None
    items_newest_first: npt.NDArray[np.int64] | None
    known_users: frozenset[str] | None
    known_items: frozenset[str] | None

    def reference_counts(self, window_events: int, factor: int) -> dict[str, float] | None:
        """The item counts PSI compares a window with: the snapshot's newest interactions,
        ``factor`` times the window's events (every one when it has fewer, or ``factor`` is 0).
        Recent traffic is compared with where the training data ended, not with its whole
        history: all-time popularity differs from any day's, so against the whole history
        the PSI of a steady system stays high after every retrain, and one fires every
        cool-down."""
        if self.item_ids is None or self.items_newest_first is None:
            return None
        newest = self.items_newest_first
        if factor:
            newest = newest[: max(window_events * factor, 1)]
        counts = np.bincount(newest, minlength=len(self.item_ids))
        return {str(self.item_ids[index]): float(counts[index]) for index in np.flatnonzero(counts)}


_PROFILES: dict[tuple[str, int], TrainingProfile] = {}


def _read_verified(store: ArtifactStore, folder: str, name: str) -> bytes:
    """One file of a bundle, checked against its manifest (without reading the others)."""
    try:
        manifest = json.loads(store.read_bytes(f"{folder}/{MANIFEST}"))
        expected = manifest["files"][name]["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"'{store.url(folder)}' does not list {name}.") from error
    data = store.read_bytes(f"{folder}/{name}")
    if sha256(data) != expected:
        raise ArtifactError(f"'{store.url(folder + '/' + name)}' does not match its checksum.")
    return data


def load_profile(store: ArtifactStore, info: ModelInfo) -> TrainingProfile:
    """Read (once per process and version) the training profile of a model version."""
    cache_key = (store.base_url, info.version)
    if cache_key in _PROFILES:
        return _PROFILES[cache_key]
    item_ids: npt.NDArray[np.str_] | None = None
    items_newest_first: npt.NDArray[np.int64] | None = None
    known_users: frozenset[str] | None = None
    known_items: frozenset[str] | None = None
    try:
        arrays = load_npz(_read_verified(store, snapshot_folder(info.snapshot_id), SNAPSHOT_FILE))
        item_ids = arrays["item_ids"]
        newest_first = np.argsort(-arrays["times"], kind="stable")
        items_newest_first = arrays["cols"].astype(np.int64)[newest_first]
        known_users = frozenset(str(user) for user in arrays["user_ids"])
        known_items = frozenset(str(item) for item in arrays["item_ids"])
    except ArtifactError as error:
        log.warning("drift: no training snapshot for version %d: %s", info.version, error)
    try:
        ids = load_npz(_read_verified(store, model_folder(info.version), IDS_FILE))
        known_users = frozenset(str(user) for user in ids["user_ids"])
        known_items = frozenset(str(item) for item in ids["item_ids"])
    except ArtifactError as error:
        log.warning("drift: no id tables for version %d: %s", info.version, error)
    profile = TrainingProfile(
        info.version, info.snapshot_id, item_ids, items_newest_first, known_users, known_items
    )
    _PROFILES.clear()  # only the active version's is worth keeping
    _PROFILES[cache_key] = profile
    return profile


# ── the report ────────────────────────────────────────────────────────────────────────────
def _unknown_share(counts: Counter[str], known: frozenset[str] | None) -> float | None:
    total = sum(counts.values())
    if known is None or not total:
        return None
    return sum(count for name, count in counts.items() if name not in known) / total


def compute_report(
    window: Window, profile: TrainingProfile | None, settings: Settings, *, now: float
) -> DriftReport:
    """The report of one check; ``status`` is ``drift`` when a threshold is crossed."""
    total = window.events
    thresholds = {
        "psi": settings.drift_psi_threshold,
        "unknown_share": settings.drift_unknown_share_threshold,
        "min_events": float(settings.drift_min_events),
    }
    report = DriftReport(
        status="ok",
        checked_at=datetime.fromtimestamp(now, UTC),
        window_hours=window.hours,
        window_start=datetime.fromtimestamp(window.first_hour * 3600, UTC),
        events=total,
        event_types={kind: count / total for kind, count in sorted(window.types.items())}
        if total
        else {},
        hit_rate=window.hits,
        thresholds=thresholds,
    )
    if profile is None:
        return report.model_copy(update={"status": "no_model"})
    report.model_version = profile.version
    report.snapshot_id = profile.snapshot_id
    window_items = sum(window.items.values())
    reference = profile.reference_counts(window_items, settings.drift_reference_factor)
    if reference and window_items:
        top = top_items_for(
            window_items,
            events_per_bin=settings.drift_events_per_bin,
            most=settings.drift_top_items,
        )
        report.psi = psi(reference, window.items, top=top, epsilon=settings.drift_psi_epsilon)
        report.psi_reference = int(sum(reference.values()))
        report.psi_top_items = top
    report.unknown_user_share = _unknown_share(window.users, profile.known_users)
    report.unknown_item_share = _unknown_share(window.items, profile.known_items)
    if total < settings.drift_min_events:
        report.status = "insufficient_data"
        report.reasons = [f"{total} event(s) in the window, fewer than {settings.drift_min_events}"]
        return report
    report.reasons = _thresholds_crossed(report, settings)
    report.status = "drift" if report.reasons else "ok"
    return report


def _thresholds_crossed(report: DriftReport, settings: Settings) -> list[str]:
    """Why the window has drifted from the training data, one reason per threshold crossed."""
    reasons = []
    if report.psi is not None and report.psi > settings.drift_psi_threshold:
        reasons.append(f"item popularity PSI {report.psi:.3f} > {settings.drift_psi_threshold}")
    for kind, share in (
        ("users", report.unknown_user_share),
        ("items", report.unknown_item_share),
    ):
        if share is not None and share > settings.drift_unknown_share_threshold:
            reasons.append(
                f"{share:.1%} of the events are on {kind} the model does not know "
                f"(> {settings.drift_unknown_share_threshold:.0%})"
            )
    return reasons


async def maybe_trigger(
    client: RedisClient, report: DriftReport, settings: Settings, send: Send
) -> DriftReport:
    """Enqueue one retrain for a report that shows drift, unless a training is running or a
    drift retrain was enqueued within the cool-down (by this monitor or any other)."""
    if report.status != "drift":
        return report
    if await client.execute("EXISTS", keys.TRAINING_LOCK):
        return report.model_copy(update={"trigger_skipped": "a training is running"})
    taken = await client.execute(
        "SET", keys.DRIFT_RETRAIN_COOLDOWN, "pending", "NX", "EX", settings.drift_cooldown_seconds
    )
    if taken is None:
        holder, ttl = await client.execute_many(
            [("GET", keys.DRIFT_RETRAIN_COOLDOWN), ("TTL", keys.DRIFT_RETRAIN_COOLDOWN)]
        )
        return report.model_copy(
            update={
                "trigger_skipped": f"cool-down: retrain {holder!s} was enqueued by drift; "
                f"next trigger possible in {max(int(ttl), 0)} s"
            }
        )
    try:
        task_id = await asyncio.to_thread(send)
    except BaseException:
        await client.execute("DEL", keys.DRIFT_RETRAIN_COOLDOWN)  # nothing was enqueued
        raise
    await client.execute("SET", keys.DRIFT_RETRAIN_COOLDOWN, task_id, "XX", "KEEPTTL")
    metrics.DRIFT_TRIGGERS.inc()
    log.warning("drift: enqueued retrain %s: %s", task_id, "; ".join(report.reasons))
    return report.model_copy(update={"triggered_task_id": task_id})


async def store_report(client: RedisClient, report: DriftReport) -> None:
    """The latest report in one key, and a history capped at ``DRIFT_HISTORY_LENGTH``."""
    payload = report.model_dump_json()
    await client.execute_many(
        [
            ("SET", keys.DRIFT_LATEST, payload),
            ("LPUSH", keys.DRIFT_HISTORY, payload),
            ("LTRIM", keys.DRIFT_HISTORY, 0, keys.DRIFT_HISTORY_LENGTH - 1),
        ]
    )


def export_metrics(report: DriftReport) -> None:
    if report.psi is not None:
        metrics.DRIFT_PSI.set(report.psi)
    if report.unknown_user_share is not None:
        metrics.DRIFT_UNKNOWN_SHARE.labels("users").set(report.unknown_user_share)
    if report.unknown_item_share is not None:
        metrics.DRIFT_UNKNOWN_SHARE.labels("items").set(report.unknown_item_share)
    for version, rate in report.hit_rate.items():
        if rate.hit_rate is not None:
            metrics.DRIFT_HIT_RATE.labels(version).set(rate.hit_rate)


async def check_drift(
    client: RedisClient,
    store: ArtifactStore,
    settings: Settings,
    send: Send,
    *,
    now: float,
) -> DriftReport:
    """One check: window, profile, report, maybe a trigger; the report is stored."""
    active = await ModelRegistry(client).active()
    window = await read_window(
        client, settings.partitions, now=now, hours=settings.drift_window_hours
    )
    profile = await asyncio.to_thread(load_profile, store, active) if active else None
    report = compute_report(window, profile, settings, now=now)
    report = await maybe_trigger(client, report, settings, send)
    if active is not None:
        rolled_back = await maybe_roll_back(
            ModelRegistry(client), report, active, settings, now=now
        )
        report = report.model_copy(update={"rolled_back": rolled_back})
    await store_report(client, report)
    export_metrics(report)
    return report


async def run_drift_check(settings: Settings, send: Send, *, now: float) -> DriftReport:
    client = await connect(
        settings.redis_dsn, command_timeout=settings.redis_timeout_seconds, name="drift-monitor"
    )
    try:
        return await check_drift(
            client, ArtifactStore(settings.artifact_url), settings, send, now=now
        )
    finally:
        await client.aclose()
