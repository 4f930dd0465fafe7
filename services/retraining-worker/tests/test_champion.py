"""The challenger is judged against the active model on the same holdout, and old artifacts
are collected without ever touching the active or the previous version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from recsys_shared.artifacts import ArtifactStore, model_folder
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo, ModelStatus, SnapshotInfo
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.judging import Bench, gate
from retraining_worker.selection import Plan, configured_recipe
from retraining_worker.training import (
    Champion,
    Snapshot,
    _train_and_evaluate,
    collect_garbage,
    evaluate_champion,
)

PRECISION = "precision_at_5"


def _bench(data: Interactions, settings: Settings) -> Bench:
    return Bench.build(data, settings.holdout_fraction, settings, content=None, features=None)


def test_the_same_recipe_needs_no_second_fit(clusters: Interactions, settings: Settings) -> None:
    recipe = configured_recipe(settings, "als")
    assert evaluate_champion(Champion(1, recipe), recipe, _bench(clusters, settings)) is None


def test_another_recipe_is_fitted_on_the_same_window(
    clusters: Interactions, settings: Settings
) -> None:
    recipe = configured_recipe(settings, "als")
    bench = _bench(clusters, settings)
    champion = Champion(1, configured_recipe(settings, "bpr"))
    scores = evaluate_champion(champion, recipe, bench)
    assert scores is not None
    assert scores["evaluated_users"] == bench.judge(recipe)["evaluated_users"]
    assert scores != bench.judge(recipe)


def test_a_challenger_worse_than_the_champion_is_rejected(
    clusters: Interactions, settings: Settings, snapshot: SnapshotInfo
) -> None:
    good = configured_recipe(settings, "als")
    champion = Champion(version=3, recipe=good)
    # A crippled recipe: one factor, one iteration, heavy regularisation.
    weak = settings.model_copy(update={"factors": 2, "iterations": 1, "regularization": 1000.0})

    outcome, info, served = _train_and_evaluate(
        Snapshot(clusters, None, None), Plan(algorithm="als"), None, weak, snapshot, 4, champion
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
