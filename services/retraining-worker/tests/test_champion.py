"""The challenger is judged against the active model on the same holdout (what is pruned after
a publish: ``test_pruning.py``)."""

from __future__ import annotations

from dataclasses import replace

from recsys_shared.schemas import SnapshotInfo
from retraining_worker.config import Settings
from retraining_worker.data import Interactions, temporal_split
from retraining_worker.training import (
    Champion,
    TrainingParams,
    _train_and_evaluate,
    evaluate,
    evaluate_champion,
    fit,
    gate,
)

PRECISION = "precision_at_5"


def test_the_same_recipe_needs_no_second_fit(clusters: Interactions, settings: Settings) -> None:
    params = TrainingParams.from_settings(settings, None)
    split = temporal_split(clusters, settings.holdout_fraction)
    assert evaluate_champion(Champion(1, params), params, clusters, split, 5) is None


def test_another_recipe_is_fitted_on_the_same_window(
    clusters: Interactions, settings: Settings
) -> None:
    params = TrainingParams.from_settings(settings, None)
    split = temporal_split(clusters, settings.holdout_fraction)
    champion = Champion(1, replace(params, algorithm="bpr"))
    scores = evaluate_champion(champion, params, clusters, split, settings.evaluation_k)
    assert scores is not None
    assert (
        scores["evaluated_users"]
        == evaluate(fit(params, clusters, split.train), clusters, split, settings.evaluation_k)[
            "evaluated_users"
        ]
    )


def test_a_challenger_worse_than_the_champion_is_rejected(
    clusters: Interactions, settings: Settings, snapshot: SnapshotInfo
) -> None:
    good = TrainingParams.from_settings(settings, None)
    champion = Champion(version=3, params=good)
    # A crippled recipe: one factor, one iteration, heavy regularisation.
    weak = replace(good, factors=1, iterations=1, regularization=1000.0)

    outcome, info, served = _train_and_evaluate(clusters, weak, settings, snapshot, 4, champion)

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
