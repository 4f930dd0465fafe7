"""Judging recipes on a time-ordered holdout: fit on what came before, rank for what came after.

One :class:`Bench` holds a split and everything each judgement shares (the content model, the
item vectors diversity is measured with), so the search's candidates, the challenger, the
champion's recipe and popularity are all judged on the very same users and targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from recsys_shared.schemas import Recipe, metric_name
from retraining_worker.config import Settings
from retraining_worker.data import (
    HoldoutSplit,
    Interactions,
    per_user_split,
    seen_matrix,
    temporal_split,
)
from retraining_worker.evaluation import (
    intra_list_diversity,
    item_popularity,
    lift,
    novelty,
    rank_in_batches,
    ranking_metrics,
    unit_rows,
)
from retraining_worker.recipes import FittedRecipe, TrainingSet, fit
from retraining_worker.recipes.weighting import training_matrix


@dataclass(frozen=True)
class Bench:
    """A holdout split of ``data`` and what judging on it needs.

    ``content`` is the content model's neighbours over ``data``'s items (None without item
    metadata); ``item_vectors`` describe items for intra-list diversity.
    """

    data: Interactions
    split: HoldoutSplit
    k: int
    content: csr_matrix | None
    item_vectors: csr_matrix
    threads: int
    seed: int

    @classmethod
    def build(
        cls,
        data: Interactions,
        holdout_fraction: float,
        settings: Settings,
        *,
        content: csr_matrix | None,
        features: csr_matrix | None,
    ) -> Bench:
        split = temporal_split(data, holdout_fraction)
        # Diversity by content when items are described, else by who interacted with them.
        vectors = features if features is not None else data.matrix(split.train).T.tocsr()
        return cls(
            data,
            split,
            settings.evaluation_k,
            content,
            unit_rows(vectors),
            settings.training_threads,
            settings.random_seed,
        )

    def validation(self, holdout_fraction: float) -> Bench:
        """What a search tunes on: inside this split's training window (the holdout stays
        unseen until the winner is judged), each user's most recent interactions.

        Per user rather than one global slice of time: every active user is in it, not only
        those active at the very end, so the ranking of candidates is far less noisy (on the
        demo, ~600 users rather than ~150)."""
        earlier = self.data.subset(self.split.train)
        return Bench(
            earlier,
            per_user_split(earlier, holdout_fraction),
            self.k,
            self.content,
            self.item_vectors,
            self.threads,
            self.seed,
        )

    def training_set(self, recipe: Recipe, mask: np.ndarray | None = None) -> TrainingSet:
        return TrainingSet(
            training_matrix(self.data, recipe, mask), self.content, self.threads, self.seed
        )

    def judge(self, recipe: Recipe) -> dict[str, float]:
        """Fit ``recipe`` on the training window and score it on the holdout."""
        return self.score(fit(recipe, self.training_set(recipe, self.split.train)))

    def score(self, model: FittedRecipe) -> dict[str, float]:
        """Rank for each evaluated user from their revealed history, as serving would."""
        history = self.split.revealed
        return self._metrics(
            rank_in_batches(lambda rows: model.score(history[rows]), self._seen(), k=self.k)
        )

    def popularity(self) -> dict[str, float]:
        """The baseline: items by how many users touched them in the training window."""
        popular = self._popularity()

        def scores(rows: slice) -> np.ndarray:
            count = len(range(*rows.indices(len(self.split.users))))
            return np.broadcast_to(popular, (count, popular.shape[0]))

        return self._metrics(rank_in_batches(scores, self._seen(), k=self.k))

    def _popularity(self) -> np.ndarray:
        return item_popularity(self.data.matrix(self.split.train))

    def _seen(self) -> csr_matrix:
        return seen_matrix(self.data, self.split.revealed_mask, self.split.users)

    def _metrics(self, ranked: np.ndarray) -> dict[str, float]:
        scores = ranking_metrics(ranked, self.split.targets, k=self.k, n_items=self.data.shape[1])
        if scores:
            train_users = len(np.unique(self.data.rows[self.split.train]))
            scores["novelty"] = novelty(ranked[:, : self.k], self._popularity(), train_users)
            scores["intra_list_diversity"] = intra_list_diversity(
                ranked[:, : self.k], self.item_vectors
            )
        return scores


def gate(
    metrics_: dict[str, float],
    baseline: dict[str, float],
    settings: Settings,
    champion: dict[str, float] | None = None,
) -> list[str]:
    """Reasons to reject the challenger; empty when it may be published."""
    key = metric_name("precision", settings.evaluation_k)
    if not metrics_ or not metrics_.get("evaluated_users"):
        return ["no users in the holdout window to evaluate on"]
    challenger, popular = metrics_.get(key, 0.0), baseline.get(key, 0.0)
    reasons = []
    if lift(challenger, popular) < settings.gate_min_lift:
        reasons.append(
            f"{key} {challenger:.4f} does not beat the popularity baseline {popular:.4f} "
            f"by the required {settings.gate_min_lift:.0%}"
        )
    if champion and champion.get("evaluated_users"):
        best = champion.get(key, 0.0)
        if challenger < best * (1.0 - settings.champion_tolerance) and not math.isclose(
            challenger, best
        ):
            reasons.append(
                f"{key} {challenger:.4f} trails the active model's {best:.4f} on the same "
                f"holdout by more than the {settings.champion_tolerance:.0%} tolerance"
            )
    return reasons
