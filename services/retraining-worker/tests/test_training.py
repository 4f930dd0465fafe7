"""Fit, evaluate against the popularity baseline, gate, and write the served artifact."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from celery import Celery, Task
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking

from recsys_shared.artifacts import (
    IDS_FILE,
    MANIFEST,
    MODEL_FILE,
    ArtifactStore,
    load_npz,
    model_folder,
    sha256,
)
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Algorithm, ModelStatus, SnapshotInfo, TrainingStatus
from retraining_worker import training
from retraining_worker.config import Settings
from retraining_worker.data import Interactions, temporal_split
from retraining_worker.judging import Bench, gate
from retraining_worker.recipes import fit
from retraining_worker.recipes.factors import AlsModel, BprModel
from retraining_worker.selection import Plan, configured_recipe
from retraining_worker.training import (
    Snapshot,
    _train_and_evaluate,
    _write_artifact,
    run_training,
)

from .conftest import WriteSnapshot

PRECISION = "precision_at_5"
ALS = Plan(search=False, algorithm="als")


def _bench(data: Interactions, settings: Settings) -> Bench:
    return Bench.build(data, settings.holdout_fraction, settings, content=None, features=None)


def _judge(
    data: Interactions, settings: Settings, algorithm: Algorithm = "als"
) -> tuple[dict[str, float], dict[str, float]]:
    bench = _bench(data, settings)
    return bench.judge(configured_recipe(settings, algorithm)), bench.popularity()


# ── ALS against the popularity baseline ─────────────────────────────────────────────────
def test_als_beats_popularity_on_clusters_and_passes_the_gate(
    clusters: Interactions, settings: Settings
) -> None:
    scores, baseline = _judge(clusters, settings)

    assert scores["evaluated_users"] == baseline["evaluated_users"] > 10
    # Popularity mixes both clusters' favourites; the model learnt which cluster a user is in.
    assert scores[PRECISION] > baseline[PRECISION] * (1 + settings.gate_min_lift)
    assert gate(scores, baseline, settings) == []


def test_gate_rejects_a_model_of_shuffled_items(clusters: Interactions, settings: Settings) -> None:
    scores, baseline = _judge(clusters.shuffled(settings.random_seed), settings)

    reasons = gate(scores, baseline, settings)

    assert scores[PRECISION] < baseline[PRECISION]
    assert len(reasons) == 1
    assert "popularity baseline" in reasons[0]
    assert PRECISION in reasons[0]


def test_als_evaluation_is_deterministic(clusters: Interactions, settings: Settings) -> None:
    assert _judge(clusters, settings) == _judge(clusters, settings)


def test_bpr_trains_and_evaluates(clusters: Interactions, settings: Settings) -> None:
    bench = _bench(clusters, settings)
    recipe = configured_recipe(settings, "bpr")

    model = fit(recipe, bench.training_set(recipe, bench.split.train))
    scores = bench.score(model)

    assert isinstance(model, BprModel)
    assert isinstance(model.model, BayesianPersonalizedRanking)
    assert model.model.item_factors.shape[0] == clusters.shape[1]
    assert set(scores) == {
        "precision_at_5",
        "recall_at_5",
        "ndcg_at_5",
        "map_at_5",
        "coverage",
        "evaluated_users",
        "novelty",
        "intra_list_diversity",
    }
    assert scores["evaluated_users"] == len(bench.split.users) > 0
    for name, value in scores.items():
        if name not in ("evaluated_users", "novelty"):
            assert 0.0 <= value <= 1.0, name
    assert scores["novelty"] > 0


def test_configured_recipes_take_the_settings(settings: Settings) -> None:
    als = configured_recipe(settings, "als")
    bpr = configured_recipe(settings, "bpr")

    assert als.algorithm == "als"
    assert bpr.algorithm == "bpr"
    assert als.factors == 8
    assert als.iterations == 10


# ── gate ─────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "scores", [{}, {PRECISION: 0.5, "evaluated_users": 0.0}], ids=["empty", "zero-users"]
)
def test_gate_without_evaluated_users(scores: dict[str, float], settings: Settings) -> None:
    reasons = gate(scores, {PRECISION: 0.1, "evaluated_users": 3.0}, settings)

    assert len(reasons) == 1
    assert "no users" in reasons[0]


@pytest.mark.parametrize(
    ("challenger", "baseline", "passes"),
    [
        (0.104, 0.1, False),  # 4 % lift, below the required 5 %
        (0.1, 0.1, False),
        (0.09, 0.1, False),
        (0.0, 0.0, False),
        (0.106, 0.1, True),
        (0.2, 0.1, True),
        (0.01, 0.0, True),  # anything beats a baseline that never hits
    ],
)
def test_gate_requires_the_minimum_lift(
    challenger: float, baseline: float, passes: bool, settings: Settings
) -> None:
    reasons = gate(
        {PRECISION: challenger, "evaluated_users": 10.0},
        {PRECISION: baseline, "evaluated_users": 10.0},
        settings,
    )

    assert (reasons == []) is passes
    if not passes:
        assert "popularity baseline" in reasons[0]


# ── the task's plain functions: judge, then fit and write the served model ──────────────
def test_train_and_evaluate_then_write_artifact(
    clusters: Interactions, settings: Settings, snapshot: SnapshotInfo, tmp_path: Path
) -> None:
    outcome, info, served = _train_and_evaluate(
        Snapshot(clusters, None, None), ALS, None, settings, snapshot, 7
    )

    assert outcome.status == "published"
    assert outcome.reasons == []
    assert outcome.version == info.version == 7
    assert info.status is ModelStatus.CANDIDATE
    assert info.snapshot_id == snapshot.snapshot_id
    assert info.metrics == outcome.metrics
    assert info.metrics[PRECISION] > info.baseline_metrics[PRECISION]
    assert info.data.interactions == len(clusters)
    assert info.data.holdout_cut_time == temporal_split(clusters, 0.2).cut_time
    assert info.selection is not None
    assert info.selection.mode == "requested"
    assert info.recipe == configured_recipe(settings, "als")
    assert isinstance(served, AlsModel)
    assert served.model.item_factors.shape == (clusters.shape[1], settings.factors)

    store = ArtifactStore(f"file://{tmp_path / 'store'}")
    manifest = _write_artifact(store, info, served, Snapshot(clusters, None, None))

    folder = model_folder(7)
    assert store.exists(f"{folder}/{MANIFEST}")
    read_manifest, files = store.read_bundle(folder)
    assert read_manifest == manifest
    assert read_manifest["version"] == 7
    assert read_manifest["algorithm"] == "als"
    assert read_manifest["snapshot_id"] == snapshot.snapshot_id
    assert set(files) == {MODEL_FILE, IDS_FILE}
    assert sha256(files[MODEL_FILE]) == manifest["files"][MODEL_FILE]["sha256"]
    assert len(files[MODEL_FILE]) == manifest["files"][MODEL_FILE]["bytes"]

    loaded = AlternatingLeastSquares.load(io.BytesIO(files[MODEL_FILE]))
    np.testing.assert_array_equal(loaded.item_factors, served.model.item_factors)
    np.testing.assert_array_equal(loaded.user_factors, served.model.user_factors)
    ids = load_npz(files[IDS_FILE])
    np.testing.assert_array_equal(ids["user_ids"], clusters.user_ids)
    np.testing.assert_array_equal(ids["item_ids"], clusters.item_ids)


def test_served_model_is_fit_on_all_the_data(
    clusters: Interactions, settings: Settings, snapshot: SnapshotInfo
) -> None:
    _, _, served = _train_and_evaluate(
        Snapshot(clusters, None, None), ALS, None, settings, snapshot, 1
    )

    assert isinstance(served, AlsModel)
    recipe = configured_recipe(settings, "als")
    bench = _bench(clusters, settings)
    everything = fit(recipe, bench.training_set(recipe))
    only_train = fit(recipe, bench.training_set(recipe, bench.split.train))
    assert isinstance(everything, AlsModel)
    assert isinstance(only_train, AlsModel)
    factors = served.model.item_factors
    np.testing.assert_allclose(factors, everything.model.item_factors, rtol=1e-5)
    assert not np.allclose(factors, only_train.model.item_factors)


@pytest.mark.parametrize("keep_rejected", [True, False])
def test_train_and_evaluate_rejects_noise(
    clusters: Interactions, settings: Settings, snapshot: SnapshotInfo, keep_rejected: bool
) -> None:
    settings = settings.model_copy(update={"keep_rejected_artifacts": keep_rejected})
    outcome, info, served = _train_and_evaluate(
        Snapshot(clusters.shuffled(settings.random_seed), None, None),
        ALS,
        None,
        settings,
        snapshot,
        2,
    )

    # Fitted all the same when rejected versions keep an artifact (an experiment may try it).
    assert (served is not None) is keep_rejected
    assert outcome.status == "rejected"
    assert info.status is ModelStatus.REJECTED
    assert info.status_reason is not None
    assert "popularity baseline" in info.status_reason
    assert outcome.reasons == [info.status_reason]


def test_train_and_evaluate_without_evaluated_users(
    make_interactions: Callable[..., Interactions], settings: Settings, snapshot: SnapshotInfo
) -> None:
    # Every user's recent window holds a single interaction.
    data = make_interactions(
        rows=[0, 0, 1, 1, 2, 2], cols=[0, 1, 1, 2, 2, 0], times=[1, 5, 2, 6, 3, 7]
    )
    holdout = settings.model_copy(update={"holdout_fraction": 0.5})

    outcome, info, served = _train_and_evaluate(
        Snapshot(data, None, None), ALS, None, holdout, snapshot, 3
    )

    assert served is not None  # rejected, and kept for an experiment (the default)
    assert outcome.status == "rejected"
    assert outcome.metrics == {}
    assert info.status is ModelStatus.REJECTED
    assert "no users" in (info.status_reason or "")


# ── forced and search trainings delivered again ─────────────────────────────────────────
@pytest.fixture
def on_redis(
    settings: Settings,
    redis_url: str,
    clusters: Interactions,
    write_snapshot: WriteSnapshot,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings on the test Redis, with a short search; the feature-store hands out the
    ``clusters`` snapshot (the same data every time: one snapshot id)."""
    store = ArtifactStore(settings.artifact_url)
    info: SnapshotInfo = write_snapshot(store, "1700000000000-0.g0", clusters)

    async def snapshot_taken(_: Settings) -> SnapshotInfo:
        return info

    monkeypatch.setattr(training, "request_snapshot", snapshot_taken)
    return Settings(
        **{
            **settings.model_dump(exclude={"redis_url"}),
            "redis_url": redis_url,
            "training_budget_seconds": 5,
            "search_max_trials": 2,
        }
    )


#: The weekly scheduled search, and a forced retrain through the API.
AGAIN = pytest.mark.parametrize(
    "request_", [{"search": True}, {"force": True, "algorithm": "als"}], ids=["search", "force"]
)


@AGAIN
async def test_a_task_delivered_again_after_publishing_returns_its_version(
    on_redis: Settings, redis_client: RedisClient, request_: dict[str, Any]
) -> None:
    """A worker killed after publishing, before the ack: the message comes back with its task
    id and must not publish a second version of the snapshot."""
    first = await run_training(on_redis, task_id="task-1", **request_)
    assert first.status is TrainingStatus.PUBLISHED, first.reasons

    again = await run_training(on_redis, task_id="task-1", **request_)

    assert again.status is TrainingStatus.UNCHANGED
    assert again.version == first.version
    assert again.reasons == [
        f"version {first.version} was already trained on this snapshot by this task "
        "(delivered again)"
    ]
    registry = ModelRegistry(redis_client)
    assert await registry.versions() == [first.version]
    assert await registry.active_version() == first.version


@AGAIN
async def test_a_new_forced_request_on_the_same_snapshot_trains_again(
    on_redis: Settings, redis_client: RedisClient, request_: dict[str, Any]
) -> None:
    first = await run_training(on_redis, task_id="task-1", **request_)

    second = await run_training(on_redis, task_id="task-2", **request_)
    # Outside a task nothing tells a delivery from another: forced, it trains.
    third = await run_training(on_redis, **request_)
    # Not forced: the snapshot's latest version stands, whichever task made it.
    refit = await run_training(on_redis, task_id="task-1")

    assert first.version is not None
    assert second.status is not TrainingStatus.UNCHANGED
    assert second.version == first.version + 1
    assert third.status is not TrainingStatus.UNCHANGED
    assert third.version == first.version + 2
    assert refit.status is TrainingStatus.UNCHANGED
    assert refit.version == third.version
    assert await ModelRegistry(redis_client).versions(newest_first=False) == [1, 2, 3]


def test_a_celery_task_delivered_again_finds_its_version_by_its_id(on_redis: Settings) -> None:
    """As ``tasks.train_model`` calls it: inside a Celery task, with the task's own id."""
    app = Celery("probe", set_as_current=False)

    @app.task(bind=True)  # type: ignore[untyped-decorator]
    def train(self: Task) -> dict[str, Any]:
        return asyncio.run(
            run_training(on_redis, search=True, task_id=self.request.id)
        ).model_dump()

    first = train.apply(task_id="beat-search-1").get()
    again = train.apply(task_id="beat-search-1").get()
    other = train.apply(task_id="beat-search-2").get()

    assert first["status"] == TrainingStatus.PUBLISHED
    assert again["status"] == TrainingStatus.UNCHANGED
    assert again["version"] == first["version"]
    assert other["status"] != TrainingStatus.UNCHANGED
    assert other["version"] == first["version"] + 1
