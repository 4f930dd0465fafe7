"""Training snapshots: every user's history as arrays, checked for quality, written whole.

A snapshot is named by the stream position it covers (every event before it is applied) and the
data generation (bumped by user erasures), so the same data always yields the same snapshot id and
a retried training finds the snapshot, and the model, it already made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from feature_store import metrics
from feature_store.config import Settings
from recsys_shared import keys
from recsys_shared.artifacts import (
    CATALOGUE_FILE,
    MANIFEST,
    SNAPSHOT_FILE,
    ArtifactStore,
    npz_bytes,
    snapshot_folder,
)
from recsys_shared.features import parse_categories
from recsys_shared.schemas import (
    EARLIEST_TIMESTAMP,
    MAX_CLOCK_SKEW,
    QualityCheck,
    QualityReport,
    SnapshotInfo,
)
from recsys_shared.streams import stream_position

log = logging.getLogger(__name__)

_SCAN_BATCH = 500


@dataclass
class Interactions:
    """Column arrays of (user, item, weight, time), with the id tables they index into."""

    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    _item_index: dict[str, int] = field(default_factory=dict)

    def add_user(
        self, user_id: str, weights: dict[str, str], times: list[tuple[str, float]]
    ) -> None:
        if not times:
            return
        row = len(self.user_ids)
        self.user_ids.append(user_id)
        for item_id, moment in times:
            col = self._item_index.get(item_id)
            if col is None:
                col = self._item_index[item_id] = len(self.item_ids)
                self.item_ids.append(item_id)
            self.rows.append(row)
            self.cols.append(col)
            self.weights.append(float(weights.get(item_id, 0.0)))
            self.times.append(moment)

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "user_ids": np.array(self.user_ids, dtype=np.str_),
            "item_ids": np.array(self.item_ids, dtype=np.str_),
            "rows": np.array(self.rows, dtype=np.int32),
            "cols": np.array(self.cols, dtype=np.int32),
            "weights": np.array(self.weights, dtype=np.float32),
            "times": np.array(self.times, dtype=np.float64),
        }


async def read_interactions(client: aioredis.Redis) -> Interactions:
    """Every user's history, one user at a time (each read is consistent for its user), in
    user order, so the same data always produces the same arrays."""
    # SSCAN may return a member twice while the set grows: a set of ids, sorted once.
    users = sorted({user_id async for user_id in client.sscan_iter(keys.USERS, count=_SCAN_BATCH)})
    interactions = Interactions()
    for start in range(0, len(users), _SCAN_BATCH):
        await _read_users(client, users[start : start + _SCAN_BATCH], interactions)
    return interactions


async def _read_users(client: aioredis.Redis, users: list[str], into: Interactions) -> None:
    if not users:
        return
    async with client.pipeline(transaction=False) as pipe:
        for user_id in users:
            pipe.hgetall(keys.user_items(user_id))
            pipe.zrange(keys.user_times(user_id), 0, -1, withscores=True)
        replies = await pipe.execute()
    for index, user_id in enumerate(users):
        into.add_user(user_id, replies[2 * index], replies[2 * index + 1])


async def read_catalogue(client: aioredis.Redis) -> dict[str, npt.NDArray[np.generic]]:
    """The catalogue's item metadata as the arrays of ``CATALOGUE_FILE``, in item order, for
    the worker's content model (items nobody interacted with included)."""
    items = sorted({item async for item in client.sscan_iter(keys.ITEMS, count=_SCAN_BATCH)})
    titles: list[str] = []
    flat: list[str] = []
    offsets = [0]
    for start in range(0, len(items), _SCAN_BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for item_id in items[start : start + _SCAN_BATCH]:
                pipe.hmget(keys.item(item_id), "title", "categories")
            replies = await pipe.execute()
        for title, categories in replies:
            titles.append(title or "")
            flat.extend(parse_categories(categories))
            offsets.append(len(flat))
    return {
        "item_ids": np.array(items, dtype=np.str_),
        "titles": np.array(titles, dtype=np.str_),
        "category_offsets": np.array(offsets, dtype=np.int64),
        "categories": np.array(flat, dtype=np.str_),
    }


def check_quality(
    interactions: Interactions, stats: dict[str, str], settings: Settings
) -> QualityReport:
    """Refuse to train on data that is too small, too skewed, too dirty or from a broken clock."""
    n_interactions = len(interactions.rows)
    checks = [
        _at_least("users", len(interactions.user_ids), settings.min_users),
        _at_least("items", len(interactions.item_ids), settings.min_items),
        _at_least("interactions", n_interactions, settings.min_interactions),
    ]
    if n_interactions:
        rows = np.bincount(np.asarray(interactions.rows))
        cols = np.bincount(np.asarray(interactions.cols))
        checks.append(
            _at_most("top_user_share", rows.max() / n_interactions, settings.max_user_share)
        )
        checks.append(
            _at_most("top_item_share", cols.max() / n_interactions, settings.max_item_share)
        )
        times = np.asarray(interactions.times)
        latest_allowed = (datetime.now(UTC) + MAX_CLOCK_SKEW).timestamp()
        insane = np.count_nonzero(
            (times > latest_allowed) | (times < EARLIEST_TIMESTAMP.timestamp())
        )
        checks.append(_at_most("insane_timestamp_share", insane / n_interactions, 0.0))
    received = int(stats.get("accepted", 0)) + int(stats.get("duplicates", 0))
    rejected = int(stats.get("rejected", 0))
    if received + rejected:
        checks.append(
            _at_most("reject_share", rejected / (received + rejected), settings.max_reject_share)
        )
    if received:
        duplicate_share = int(stats.get("duplicates", 0)) / received
        checks.append(_at_most("duplicate_share", duplicate_share, settings.max_duplicate_share))
    return QualityReport(passed=all(check.passed for check in checks), checks=checks)


def _at_least(name: str, value: float, threshold: float) -> QualityCheck:
    passed = value >= threshold
    return QualityCheck(
        name=f"min_{name}",
        passed=passed,
        value=float(value),
        threshold=float(threshold),
        detail=f"{value:g} {name} {'≥' if passed else '<'} minimum {threshold:g}",
    )


def _at_most(name: str, value: float, threshold: float) -> QualityCheck:
    passed = value <= threshold
    return QualityCheck(
        name=name,
        passed=passed,
        value=float(value),
        threshold=float(threshold),
        detail=f"{name} {value:.4g} {'≤' if passed else '>'} maximum {threshold:.4g}",
    )


async def snapshot_id(client: aioredis.Redis) -> str:
    position = await stream_position(client)
    generation: str = await client.hget(keys.PIPELINE_STATS, "erasures") or "0"  # type: ignore[assignment]
    return f"{position.first_unapplied}.g{generation}"


async def take_snapshot(
    client: aioredis.Redis, store: ArtifactStore, settings: Settings
) -> SnapshotInfo:
    """Export the current features as a snapshot, or return the one that already covers them."""
    snapshot = await snapshot_id(client)
    folder = snapshot_folder(snapshot)
    if store.exists(f"{folder}/{MANIFEST}"):
        existing = SnapshotInfo.model_validate(json.loads(store.read_bytes(f"{folder}/{MANIFEST}")))
        await client.set(keys.SNAPSHOT_LATEST, existing.model_dump_json())
        return existing
    started = time.perf_counter()
    # Taken before reading: any user updated after this moment may be newer than the snapshot,
    # which is how the recommender decides to fold a user's latest events in.
    created_at = datetime.now(UTC)
    interactions = await read_interactions(client)
    stats: dict[str, str] = await client.hgetall(keys.PIPELINE_STATS)  # type: ignore[assignment]
    quality = check_quality(interactions, stats, settings)
    times = interactions.times
    info = SnapshotInfo(
        snapshot_id=snapshot,
        url=store.url(folder),
        created_at=created_at,
        users=len(interactions.user_ids),
        items=len(interactions.item_ids),
        interactions=len(interactions.rows),
        time_min=min(times) if times else None,
        time_max=max(times) if times else None,
        quality=quality,
    )
    files = {
        SNAPSHOT_FILE: npz_bytes(**interactions.arrays()),
        CATALOGUE_FILE: npz_bytes(**await read_catalogue(client)),
    }
    await asyncio.to_thread(store.write_bundle, folder, files, info.model_dump(mode="json"))
    await client.set(keys.SNAPSHOT_LATEST, info.model_dump_json())
    metrics.SNAPSHOTS.labels("passed" if quality.passed else "failed").inc()
    log.info(
        "snapshot %s: %d users, %d items, %d interactions in %.1fs, quality %s",
        snapshot,
        info.users,
        info.items,
        info.interactions,
        time.perf_counter() - started,
        "passed" if quality.passed else "FAILED",
    )
    return info
