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
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from feature_store import metrics
from feature_store.config import Settings
from feature_store.traffic_window import Window, share_checks, traffic_window
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
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import (
    EARLIEST_INSTANT,
    MAX_CLOCK_SKEW,
    QualityCheck,
    QualityReport,
    SnapshotInfo,
    SnapshotManifest,
    TrafficCounts,
)
from recsys_shared.streams import stream_position

log = logging.getLogger(__name__)

#: Users read per round trip.
_USERS_PER_READ = 500


@dataclass
class Interactions:
    """Column arrays of (user, item, weight, time), with the id tables they index into.

    Built chunk by chunk as numpy arrays, so the export's memory follows the interactions
    (about 20 bytes each) rather than Python objects per user or per interaction; only the
    item table (bounded by the catalogue) is a dict.
    """

    _user_ids: list[npt.NDArray[np.str_]] = field(default_factory=list)
    _rows: list[npt.NDArray[np.int32]] = field(default_factory=list)
    _cols: list[npt.NDArray[np.int32]] = field(default_factory=list)
    _weights: list[npt.NDArray[np.float32]] = field(default_factory=list)
    _times: list[npt.NDArray[np.float64]] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    _item_index: dict[str, int] = field(default_factory=dict)
    n_users: int = 0
    #: Items left out: the deleted ones, which no model trained from here on may know.
    excluded: frozenset[str] = frozenset()

    def add_users(self, histories: list[tuple[str, dict[str, str], dict[str, float]]]) -> None:
        """Append users' (id, item → weight, item → time), but the excluded items; users
        without a history left are left out."""
        kept = [(user, weights, self._kept(times)) for user, weights, times in histories]
        kept = [history for history in kept if history[2]]
        if not kept:
            return
        rows, cols, weights, times = [], [], [], []
        for offset, (_, item_weights, item_times) in enumerate(kept):
            for item_id, moment in item_times.items():
                col = self._item_index.get(item_id)
                if col is None:
                    col = self._item_index[item_id] = len(self.item_ids)
                    self.item_ids.append(item_id)
                rows.append(self.n_users + offset)
                cols.append(col)
                weights.append(float(item_weights.get(item_id, 0.0)))
                times.append(float(moment))
        self._user_ids.append(np.array([user_id for user_id, _, _ in kept], dtype=np.str_))
        self._rows.append(np.array(rows, dtype=np.int32))
        self._cols.append(np.array(cols, dtype=np.int32))
        self._weights.append(np.array(weights, dtype=np.float32))
        self._times.append(np.array(times, dtype=np.float64))
        self.n_users += len(kept)

    def _kept(self, item_times: dict[str, float]) -> dict[str, float]:
        if not self.excluded:
            return item_times
        return {item: moment for item, moment in item_times.items() if item not in self.excluded}

    @property
    def user_ids(self) -> npt.NDArray[np.str_]:
        return cast("npt.NDArray[np.str_]", _joined(self._user_ids, np.str_))

    @property
    def rows(self) -> npt.NDArray[np.int32]:
        return cast("npt.NDArray[np.int32]", _joined(self._rows, np.int32))

    @property
    def cols(self) -> npt.NDArray[np.int32]:
        return cast("npt.NDArray[np.int32]", _joined(self._cols, np.int32))

    @property
    def weights(self) -> npt.NDArray[np.float32]:
        return cast("npt.NDArray[np.float32]", _joined(self._weights, np.float32))

    @property
    def times(self) -> npt.NDArray[np.float64]:
        return cast("npt.NDArray[np.float64]", _joined(self._times, np.float64))

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self._rows)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The arrays in a canonical order: users sorted by id, each user's interactions by
        time, items in the order they first appear. The same data gives the same arrays
        however it is partitioned, so a training does not depend on the data tier's layout."""
        user_ids = self.user_ids
        item_ids = np.array(self.item_ids, dtype=np.str_)
        user_order = np.argsort(user_ids, kind="stable")
        user_rank = _ranks(user_order)
        rows = user_rank[self.rows]
        times = self.times
        order = np.lexsort((item_ids[self.cols], times, rows))
        first_seen = np.unique(self.cols[order], return_index=True)[1]
        item_order = self.cols[order][np.sort(first_seen)]
        item_rank = _ranks(item_order)
        return {
            "user_ids": user_ids[user_order],
            "item_ids": item_ids[item_order],
            "rows": rows[order].astype(np.int32),
            "cols": item_rank[self.cols[order]].astype(np.int32),
            "weights": self.weights[order],
            "times": times[order],
        }


def _ranks(order: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Where each original index lands in ``order`` (the inverse permutation)."""
    ranks = np.empty(len(order), dtype=np.intp)
    ranks[order] = np.arange(len(order))
    return ranks


def _joined(chunks: list[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
    joined: npt.NDArray[Any] = np.concatenate(chunks) if chunks else np.empty(0, dtype=dtype)
    return joined


async def read_interactions(
    client: RedisClient, partitions: keys.Partitions, excluded: frozenset[str] = frozenset()
) -> Interactions:
    """Every user's history but the ``excluded`` items, partition by partition, a chunk of
    users at a time (each read is consistent for its user), each user once; the order read in
    does not matter, the arrays are put in a canonical one (:meth:`Interactions.arrays`)."""
    interactions = Interactions(excluded=excluded)
    for partition in partitions.all:
        async for users in user_pages(client, partition):
            interactions.add_users(await _histories(client, partition, users))
    return interactions


async def user_pages(client: RedisClient, partition: keys.Partition) -> AsyncIterator[list[str]]:
    """The partition's users, a page at a time, each once.

    ``ZSCAN``, not pages of ``ZRANGE`` by rank or by score: the set is ordered by when each
    user was last heard from, so every applied event moves its user to the end and erasure
    and retention remove users while we page. By rank, the users after them shift down a
    rank (one at a page boundary is skipped) and a moved user is read twice; by score, a
    moved user is met again past the cursor. ``ZSCAN`` walks the member table, which a new
    score does not reorder, and returns every user present throughout at least once, without
    holding Redis the way one ``ZRANGE`` of a million members would. A user it returns again
    (the table was resized meanwhile) is skipped: the ids seen are kept, one partition at a
    time, about 100 bytes each (measured: 100 MB for a million 19-character ids).
    """
    seen: set[str] = set()
    cursor = "0"
    while True:
        cursor, flat = await client.execute(
            "ZSCAN", partition.users, cursor, "COUNT", _USERS_PER_READ
        )
        users = [user for user in dict.fromkeys(flat[::2]) if user not in seen]
        seen.update(users)
        if users:
            yield users
        if cursor == "0":
            return


async def _histories(
    client: RedisClient, partition: keys.Partition, users: list[str]
) -> list[tuple[str, dict[str, str], dict[str, float]]]:
    commands: list[tuple[str, ...]] = []
    for user_id in users:
        commands.append(("HGETALL", partition.user_items(user_id)))
        commands.append(("ZRANGE", partition.user_times(user_id), "0", "-1", "WITHSCORES"))
    replies = await client.execute_many(commands)
    return [
        (user_id, replies[2 * index], _scores(replies[2 * index + 1]))
        for index, user_id in enumerate(users)
    ]


def _scores(reply: Any) -> dict[str, float]:
    """``ZRANGE … WITHSCORES`` as member → score (a map or pairs, as the protocol gives it)."""
    if isinstance(reply, dict):
        return {str(member): float(score) for member, score in reply.items()}
    return {str(member): float(score) for member, score in reply}


async def read_catalogue(client: RedisClient) -> dict[str, npt.NDArray[np.generic]]:
    """The catalogue's item metadata as the arrays of ``CATALOGUE_FILE``, in item order, for
    the worker's content model (items nobody interacted with included)."""
    items = sorted(await client.execute("SMEMBERS", keys.ITEMS))
    titles: list[str] = []
    flat: list[str] = []
    offsets = [0]
    for start in range(0, len(items), _USERS_PER_READ):
        replies = await client.execute_many(
            [
                ("HMGET", keys.item(item_id), keys.ITEM_TITLE, keys.ITEM_CATEGORIES)
                for item_id in items[start : start + _USERS_PER_READ]
            ]
        )
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


def check_quality(interactions: Interactions, window: Window, settings: Settings) -> QualityReport:
    """Refuse to train on data that is too small, too skewed or from a broken clock, or on
    traffic that was too dirty over ``window`` (``feature_store.traffic_window``)."""
    n_interactions = len(interactions)
    checks = [
        _at_least("users", interactions.n_users, settings.min_users),
        _at_least("items", len(interactions.item_ids), settings.min_items),
        _at_least("interactions", n_interactions, settings.min_interactions),
    ]
    if n_interactions:
        rows = np.bincount(interactions.rows)
        cols = np.bincount(interactions.cols)
        checks.append(
            _at_most("top_user_share", rows.max() / n_interactions, settings.max_user_share)
        )
        checks.append(
            _at_most("top_item_share", cols.max() / n_interactions, settings.max_item_share)
        )
        times = interactions.times
        latest_allowed = (datetime.now(UTC) + MAX_CLOCK_SKEW).timestamp()
        insane = np.count_nonzero((times > latest_allowed) | (times < EARLIEST_INSTANT.timestamp()))
        checks.append(_at_most("insane_timestamp_share", insane / n_interactions, 0.0))
    checks.extend(share_checks(window, settings))
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


async def pipeline_counters(client: RedisClient, partitions: keys.Partitions) -> TrafficCounts:
    """Every partition's counters, summed, and the events refused at the door."""
    replies = await client.execute_many(
        [("HGETALL", partition.stats) for partition in partitions.all]
        + [("GET", keys.PIPELINE_REJECTED)]
    )
    *per_partition, rejected = replies
    totals: dict[str, int] = {}
    for counters in per_partition:
        for name, value in counters.items():
            totals[name] = totals.get(name, 0) + int(value)
    return TrafficCounts(
        accepted=totals.get(keys.STAT_ACCEPTED, 0),
        duplicates=totals.get(keys.STAT_DUPLICATES, 0),
        rejected=int(rejected or 0),
    )


async def snapshot_id(client: RedisClient, partitions: keys.Partitions) -> str:
    """``<ms>-<crc>.g<generation>``: the newest partition position in milliseconds, a checksum
    of every partition's position, and the data generation (bumped by erasures and
    retention), so the same data always gets the same id and newer data a larger one."""
    positions = [
        (await stream_position(client, partition.events)).first_unapplied
        for partition in partitions.all
    ]
    generation = str(await client.execute("GET", keys.DATA_GENERATION) or "0")
    newest = max(int(position.partition("-")[0]) for position in positions)
    checksum = zlib.crc32(",".join(positions).encode())
    return f"{newest}-{checksum}.g{generation}"


async def take_snapshot(
    client: RedisClient, store: ArtifactStore, settings: Settings
) -> SnapshotInfo:
    """Export the current features as a snapshot, or return the one that already covers them."""
    partitions = settings.partitions
    snapshot = await snapshot_id(client, partitions)
    folder = snapshot_folder(snapshot)
    if store.exists(f"{folder}/{MANIFEST}"):
        existing = SnapshotInfo.model_validate(json.loads(store.read_bytes(f"{folder}/{MANIFEST}")))
        await client.execute("SET", keys.SNAPSHOT_LATEST, existing.model_dump_json())
        return existing
    started = time.perf_counter()
    # Taken before reading: any user updated after this moment may be newer than the snapshot,
    # which is how the recommender decides to fold a user's latest events in.
    created_at = datetime.now(UTC)
    deleted: list[str] = await client.execute("ZRANGE", keys.DELETED_ITEMS, 0, -1)
    interactions = await read_interactions(client, partitions, frozenset(deleted))
    counters = await pipeline_counters(client, partitions)
    window = await asyncio.to_thread(traffic_window, store, counters, snapshot)
    quality = check_quality(interactions, window, settings)
    times = interactions.times
    info = SnapshotInfo(
        snapshot_id=snapshot,
        url=store.url(folder),
        created_at=created_at,
        users=interactions.n_users,
        items=len(interactions.item_ids),
        interactions=len(interactions),
        time_min=float(times.min()) if len(times) else None,
        time_max=float(times.max()) if len(times) else None,
        quality=quality,
    )
    files = {
        SNAPSHOT_FILE: npz_bytes(**interactions.arrays()),
        CATALOGUE_FILE: npz_bytes(**await read_catalogue(client)),
    }
    manifest = SnapshotManifest(**dict(info), pipeline_counters=counters)
    await asyncio.to_thread(store.write_bundle, folder, files, manifest.model_dump(mode="json"))
    await client.execute("SET", keys.SNAPSHOT_LATEST, info.model_dump_json())
    metrics.SNAPSHOTS.labels("passed" if quality.passed else "failed").inc()
    log.info(
        "snapshot %s: %d users, %d items, %d interactions in %.1fs, quality %s (shares %s)",
        snapshot,
        info.users,
        info.items,
        info.interactions,
        time.perf_counter() - started,
        "passed" if quality.passed else "FAILED",
        window.description,
    )
    return info
