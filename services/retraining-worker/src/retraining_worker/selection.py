"""Which recipe a training trains: a search's winner, a refit of the last winner, or one asked.

A search is costly (many fits) and runs when there is no winner yet, on demand, and on a slow
schedule; the frequent retrains (scheduled, drift-triggered) refit the last winner on new data,
which is one fit and keeps trigger → served short.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from recsys_shared.schemas import (
    Algorithm,
    AlsRecipe,
    BprRecipe,
    ModelInfo,
    Recipe,
    Selection,
    metric_name,
)
from retraining_worker.config import Settings
from retraining_worker.judging import Bench
from retraining_worker.recipes import DEFAULTS, describe
from retraining_worker.recipes.search import search

log = logging.getLogger(__name__)


#: The worker settings each recipe takes its parameters from; the other algorithms start from
#: their defaults.
_CONFIGURED: dict[Algorithm, tuple[type[AlsRecipe | BprRecipe], frozenset[str]]] = {
    "als": (AlsRecipe, frozenset({"factors", "regularization", "alpha", "iterations"})),
    "bpr": (BprRecipe, frozenset({"factors", "learning_rate", "regularization", "iterations"})),
}


def configured_recipe(settings: Settings, algorithm: Algorithm) -> Recipe:
    """The recipe of ``algorithm`` with the worker's configured parameters (ALS and BPR take
    theirs from the settings; the other algorithms start from their defaults)."""
    if algorithm not in _CONFIGURED:
        return DEFAULTS[algorithm]
    recipe_type, names = _CONFIGURED[algorithm]
    return recipe_type.model_validate(settings.model_dump(include=set(names)))


def recipe_of(info: ModelInfo, settings: Settings) -> Recipe:
    """A version's recipe; versions from before recipes existed get their algorithm's."""
    return info.recipe or configured_recipe(settings, info.algorithm)


@dataclass(frozen=True)
class Plan:
    """What a training was asked for: search or not, and the algorithm, if one was named."""

    search: bool | None = None
    algorithm: Algorithm | None = None


def choose(
    plan: Plan, last_winner: Recipe | None, bench: Bench, settings: Settings
) -> tuple[Recipe, Selection]:
    """The recipe to train, and how it was chosen."""
    searching = plan.search
    if searching is None:  # by default, only when there is nothing to refit
        searching = last_winner is None and plan.algorithm is None
    if searching:
        algorithms = [plan.algorithm] if plan.algorithm else list(settings.search_algorithms)
        if bench.content is None and len(algorithms) > 1:
            # Without item metadata the hybrid is EASE again: not worth its trials.
            algorithms = [name for name in algorithms if name != "hybrid"] or algorithms
        return run_search(bench, algorithms, settings)
    if plan.algorithm is not None:
        recipe = configured_recipe(settings, plan.algorithm)
        return recipe, Selection(mode="requested", reason=f"{describe(recipe)} was asked for")
    if last_winner is None:  # no winner, and a search was declined
        recipe = configured_recipe(settings, settings.algorithm)
        return recipe, Selection(
            mode="requested", reason=f"no winner yet and no search: {describe(recipe)}"
        )
    return last_winner, Selection(
        mode="refit", reason=f"the last winning recipe, {describe(last_winner)}, refitted"
    )


def run_search(
    bench: Bench, algorithms: list[Algorithm], settings: Settings
) -> tuple[Recipe, Selection]:
    """Search on a validation slice cut before the holdout; the best candidate wins."""
    started = time.perf_counter()
    validation = bench.validation(settings.holdout_fraction)
    metric = metric_name("precision", settings.evaluation_k)
    candidates = search(
        validation.judge,
        algorithms=algorithms,
        budget_seconds=settings.search_budget_seconds,
        metric=metric,
        seed=settings.random_seed,
        max_trials=settings.search_max_trials or None,
    )
    seconds = time.perf_counter() - started
    winner = candidates[0]
    runner_up = next(
        (other for other in candidates if other.recipe.algorithm != winner.recipe.algorithm), None
    )
    reason = (
        f"highest validation {metric} ({winner.metrics.get(metric, 0.0):.4f}) of "
        f"{len(candidates)} candidates in {seconds:.0f}s"
    )
    if runner_up is not None:
        reason += (
            f"; best other algorithm: {runner_up.recipe.algorithm} "
            f"({runner_up.metrics.get(metric, 0.0):.4f})"
        )
    log.info("search: %s won: %s", describe(winner.recipe), reason)
    return winner.recipe, Selection(
        mode="search",
        reason=reason,
        candidates=candidates,
        seconds=seconds,
        validation_cut_time=validation.split.cut_time,
    )
