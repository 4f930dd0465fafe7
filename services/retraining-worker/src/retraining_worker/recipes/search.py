"""The search: recipes and a small hyperparameter space each, within a time budget.

Optuna's TPE sampler (seeded) over a conditional space: the algorithm first, then its own
parameters. Every algorithm's default recipe is enqueued as a first trial, so each one is tried
at least once before the sampler spends the rest of the budget where the scores are best.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import cast

import optuna

from recsys_shared import schemas
from retraining_worker.recipes import DEFAULTS

log = logging.getLogger(__name__)

#: A trial's objective: fit the recipe on the validation training slice and score it there.
Objective = Callable[[schemas.Recipe], dict[str, float]]

_HALF_LIVES = (0.0, 180.0, 720.0)  # 0: no decay (optuna's choices must be plain numbers)


def _common(trial: optuna.Trial, prefix: str) -> dict[str, float | None]:
    half_life = trial.suggest_categorical(f"{prefix}.half_life_days", _HALF_LIVES)
    return {
        "half_life_days": half_life or None,
        "negative_weight": trial.suggest_categorical(
            f"{prefix}.negative_weight", (0.0, 0.25, 0.5, 1.0)
        ),
    }


def suggest(trial: optuna.Trial, algorithm: schemas.Algorithm) -> schemas.Recipe:
    """The recipe of ``algorithm`` this trial proposes."""
    common = _common(trial, algorithm)
    if algorithm == "als":
        return schemas.AlsRecipe(
            **common,
            factors=trial.suggest_categorical("als.factors", (16, 32, 64)),
            regularization=trial.suggest_float("als.regularization", 0.01, 10.0, log=True),
            alpha=trial.suggest_float("als.alpha", 0.5, 20.0, log=True),
            iterations=15,
            confidence=trial.suggest_categorical("als.confidence", ("none", "bm25", "tfidf")),
        )
    if algorithm == "bpr":
        return schemas.BprRecipe(
            **common,
            factors=trial.suggest_categorical("bpr.factors", (32, 64)),
            learning_rate=trial.suggest_float("bpr.learning_rate", 0.005, 0.1, log=True),
            regularization=trial.suggest_float("bpr.regularization", 0.001, 0.1, log=True),
        )
    if algorithm == "item_knn":
        return schemas.ItemKnnRecipe(
            **common,
            similarity=trial.suggest_categorical("item_knn.similarity", ("cosine", "bm25")),
            neighbours=trial.suggest_categorical("item_knn.neighbours", (20, 50, 100, 200)),
        )
    ease = {
        "l2": trial.suggest_float(f"{algorithm}.l2", 30.0, 3000.0, log=True),
        "max_items": trial.suggest_categorical(f"{algorithm}.max_items", (1000, 2000, 3000)),
    }
    if algorithm == "ease":
        return schemas.EaseRecipe(**common, **ease)
    return schemas.HybridRecipe(
        **common,
        **ease,
        content_weight=trial.suggest_float("hybrid.content_weight", 0.001, 0.3, log=True),
        content_neighbours=trial.suggest_categorical("hybrid.content_neighbours", (20, 50, 100)),
    )


def _as_params(recipe: schemas.Recipe) -> dict[str, object]:
    """A recipe as the trial parameters that reproduce it (for enqueueing the defaults)."""
    prefix = recipe.algorithm
    params: dict[str, object] = {"algorithm": prefix}
    for key, value in recipe.model_dump(exclude={"algorithm"}).items():
        params[f"{prefix}.{key}"] = 0.0 if key == "half_life_days" and value is None else value
    return params


def search(
    objective: Objective,
    *,
    algorithms: Sequence[schemas.Algorithm],
    budget_seconds: float,
    metric: str,
    seed: int,
    max_trials: int | None = None,
) -> list[schemas.Candidate]:
    """Every recipe tried, best first (by ``metric``; ties: the earlier trial)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for algorithm in algorithms:
        study.enqueue_trial(_as_params(DEFAULTS[algorithm]), skip_if_exists=True)
    candidates: list[schemas.Candidate] = []

    def trial_objective(trial: optuna.Trial) -> float:
        algorithm = cast(
            schemas.Algorithm, trial.suggest_categorical("algorithm", tuple(algorithms))
        )
        recipe = suggest(trial, algorithm)
        started = time.perf_counter()
        scores = objective(recipe)
        candidates.append(
            schemas.Candidate(recipe=recipe, metrics=scores, seconds=time.perf_counter() - started)
        )
        log.info("search trial %d: %s → %s", trial.number, recipe.algorithm, scores.get(metric))
        return scores.get(metric, 0.0)

    study.optimize(
        trial_objective,
        n_trials=max_trials,
        timeout=budget_seconds,
        gc_after_trial=False,
    )
    order = sorted(
        range(len(candidates)),
        key=lambda index: (-candidates[index].metrics.get(metric, 0.0), index),
    )
    return [candidates[index] for index in order]
