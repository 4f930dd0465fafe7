"""The challenger is judged against the active model on the same holdout, and old artifacts
are collected without ever touching the active or the previous version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from recsys_shared.artifacts import ArtifactStore, model_folder
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo, ModelStatus, SnapshotInfo
from retraining_worker.config import Settings
from retraining_worker.data import Interactions, temporal_split
from retraining_worker.training import (
    Champion,
    TrainingParams,
    _train_and_evaluate,
    collect_garbage,
    evaluate,
    evaluate_champion,
    fit,
    gate,
)

PRECISION = "precision_at_5"


def test_the_champion_is_scored_through_its_own_item_ids(
    clusters: Interactions, settings: Settings
) -> None:
    split = temporal_split(clusters, settings.holdout_fraction)
    model = fit(TrainingParams.from_settings(settings, None), clusters, split.train)
    direct = evaluate(model, clusters, split, settings.evaluation_k)

    # The same model under a champion whose item table is in another order: the mapping
    # must give the very same ranking.
    order = np.random.default_rng(0).permutation(len(clusters.item_ids))
    reordered = fit(TrainingParams.from_settings(settings, None), clusters, split.train)
    reordered.item_factors = model.item_factors[order]
    champion = Champion(version=1, model=reordered, item_ids=clusters.item_ids[order])

    assert evaluate_champion(champion, clusters, split, settings.evaluation_k) == direct


def test_a_challenger_worse_than_the_champion_is_rejected(
    clusters: Interactions, settings: Settings, snapshot: SnapshotInfo
) -> None:
    split = temporal_split(clusters, settings.holdout_fraction)
    good = fit(TrainingParams.from_settings(settings, None), clusters, split.train)
    champion = Champion(version=3, model=good, item_ids=clusters.item_ids)

    outcome, info, served = _train_and_evaluate(
        clusters.shuffled(1),
        TrainingParams.from_settings(settings, None),
        settings,
        snapshot,
        4,
        champion,
    )

    assert outcome.status == "rejected"
    assert served is None
    assert any("active model" in reason for reason in outcome.reasons)
    assert info.champion_version == 3
    assert info.champion_metrics[PRECISION] > info.metrics[PRECISION]


def test_gate_tolerates_a_challenger_slightly_behind_the_champion(settings: Settings) -> None:
    scores = {PRECISION: 0.40, "evaluated_users": 10.0}
    baseline = {PRECISION: 0.10, "evaluated_users": 10.0}
    assert gate(scores, baseline, settings, {PRECISION: 0.41, "evaluated_users": 10.0}) == []
    assert gate(scores, baseline, settings, {PRECISION: 0.50, "evaluated_users": 10.0})


async def test_garbage_collection_keeps_recent_active_and_previous(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    settings = Settings(redis_url="redis://unused", keep_model_versions=2, keep_snapshots=1)
    store = ArtifactStore(f"file://{tmp_path}")
    registry = ModelRegistry(redis_client)
    for version in range(1, 7):
        store.write_bundle(model_folder(version), {"model.npz": b"x"}, {"version": version})
        await registry.record(
            ModelInfo(
                version=version,
                status=ModelStatus.CANDIDATE,
                algorithm="als",
                created_at=datetime.now(UTC),
                snapshot_id=f"{version}-0.g0",
                artifact_url=store.url(model_folder(version)),
            )
        )
    await registry.activate(2, "old favourite")
    await registry.activate(1, "rolled back")  # 1 is active, 2 the previous (retired)
    for name in ("1-0.g0", "5-0.g0", "10-0.g0"):
        store.write_bytes(f"snapshots/{name}/manifest.json", b"{}")

    await collect_garbage(registry, store, settings)

    remaining = {info.version for info in await registry.list() if info.artifact_url}
    assert remaining == {1, 2, 5, 6}
    assert {v for v in range(1, 7) if store.exists(f"{model_folder(v)}/manifest.json")} == {
        1,
        2,
        5,
        6,
    }
    assert store.list_dirs("snapshots") == ["10-0.g0"]
    assert len(await registry.list()) == 6  # lineage stays listed
