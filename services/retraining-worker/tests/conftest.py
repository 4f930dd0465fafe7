"""Small deterministic data sets and settings for the retraining-worker tests.

With ``--import-mode=importlib`` test modules cannot import each other, so every shared helper
is a fixture here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from recsys_shared.artifacts import SNAPSHOT_FILE, ArtifactStore, npz_bytes, snapshot_folder
from recsys_shared.schemas import QualityReport, SnapshotInfo
from retraining_worker.config import Settings
from retraining_worker.data import Interactions

MakeInteractions = Callable[..., Interactions]


def _build(
    rows: Sequence[int],
    cols: Sequence[int],
    *,
    weights: Sequence[float] | None = None,
    times: Sequence[float] | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
) -> Interactions:
    n_users = n_users if n_users is not None else max(rows) + 1
    n_items = n_items if n_items is not None else max(cols) + 1
    count = len(rows)
    return Interactions(
        user_ids=np.array([f"u{index}" for index in range(n_users)]),
        item_ids=np.array([f"i{index}" for index in range(n_items)]),
        rows=np.asarray(rows, dtype=np.int32),
        cols=np.asarray(cols, dtype=np.int32),
        weights=np.asarray(weights if weights is not None else [1.0] * count, dtype=np.float32),
        times=np.asarray(
            times if times is not None else np.arange(count, dtype=np.float64), dtype=np.float64
        ),
    )


@pytest.fixture
def make_interactions() -> MakeInteractions:
    """Build :class:`Interactions` from plain lists (ids are ``u<row>`` and ``i<col>``)."""
    return _build


@pytest.fixture
def clusters() -> Interactions:
    """Two disjoint taste clusters: users 0-29 touch only items 0-19, users 30-59 only items
    20-39. Within a cluster, item choice is skewed (some items are popular), as in real data.
    Every interaction has a distinct time, in an order unrelated to users or items."""
    generator = np.random.default_rng(0)
    users_per_cluster, items_per_cluster, per_user = 30, 20, 8
    skew = 1.0 / (np.arange(items_per_cluster) + 1) ** 0.7
    skew /= skew.sum()
    rows: list[int] = []
    cols: list[int] = []
    for cluster in range(2):
        for user in range(users_per_cluster):
            chosen = generator.choice(items_per_cluster, size=per_user, replace=False, p=skew)
            rows += [cluster * users_per_cluster + user] * per_user
            cols += [int(cluster * items_per_cluster + item) for item in chosen]
    times = generator.permutation(len(rows)).astype(np.float64) + 1_700_000_000.0
    return _build(
        rows,
        cols,
        times=times.tolist(),
        n_users=2 * users_per_cluster,
        n_items=2 * items_per_cluster,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Small, single-threaded (deterministic) training settings with a local artifact store."""
    return Settings(
        redis_url="redis://127.0.0.1:1/0",
        artifact_url=f"file://{tmp_path / 'artifacts'}",
        algorithm="als",
        factors=8,
        iterations=10,
        regularization=0.05,
        alpha=1.0,
        random_seed=42,
        training_threads=1,
        holdout_fraction=0.2,
        evaluation_k=5,
        gate_min_lift=0.05,
        metrics_port=0,
    )


def _snapshot_info(snapshot_id: str, url: str, data: Interactions) -> SnapshotInfo:
    """The feature-store's description of a snapshot holding ``data`` (its checks passed)."""
    return SnapshotInfo(
        snapshot_id=snapshot_id,
        url=url,
        created_at=datetime.now(UTC),
        users=data.shape[0],
        items=data.shape[1],
        interactions=len(data),
        time_min=float(data.times.min()),
        time_max=float(data.times.max()),
        quality=QualityReport(passed=True, checks=[]),
    )


@pytest.fixture
def snapshot(clusters: Interactions) -> SnapshotInfo:
    return _snapshot_info("1700000000000-0", "file:///nowhere/snapshots/1700000000000-0", clusters)


WriteSnapshot = Callable[[ArtifactStore, str, Interactions], SnapshotInfo]


@pytest.fixture
def write_snapshot() -> WriteSnapshot:
    """Write ``data`` as snapshot ``snapshot_id`` the way the feature-store does: its arrays
    (the Interactions' fields) and its SnapshotInfo as the manifest; returns the info."""

    def write(store: ArtifactStore, snapshot_id: str, data: Interactions) -> SnapshotInfo:
        folder = snapshot_folder(snapshot_id)
        info = _snapshot_info(snapshot_id, store.url(folder), data)
        bundle = {SNAPSHOT_FILE: npz_bytes(**asdict(data))}
        store.write_bundle(folder, bundle, json.loads(info.model_dump_json()))
        return info

    return write
