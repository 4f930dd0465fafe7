"""The challenger is judged against the active model on the same holdout (what is pruned after
a publish: ``test_pruning.py``)."""

from __future__ import annotations

from recsys_shared.schemas import SnapshotInfo
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.judging import Bench, gate
from retraining_worker.selection import Plan, configured_recipe
from retraining_worker.training import (
    Champion,
    Snapshot,
    _train_and_evaluate,
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
    assert served is not None  # kept so that an online experiment may try it
    assert info.status.value == "rejected"
    assert any("active model" in reason for reason in outcome.reasons)
    assert info.champion_version == 3
    assert info.champion_metrics[PRECISION] > info.metrics[PRECISION]


def test_gate_tolerates_a_challenger_slightly_behind_the_champion(settings: Settings) -> None:
    scores = {PRECISION: 0.40, "evaluated_users": 10.0}
    baseline = {PRECISION: 0.10, "evaluated_users": 10.0}
    assert gate(scores, baseline, settings, {PRECISION: 0.41, "evaluated_users": 10.0}) == []
    assert gate(scores, baseline, settings, {PRECISION: 0.50, "evaluated_users": 10.0})
