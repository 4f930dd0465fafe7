"""Retraining-worker settings: training parameters, the gate, Celery reliability."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator

from recsys_shared.schemas import Algorithm
from recsys_shared.settings import FeatureStoreClientSettings, TaskQueueSettings

ALGORITHMS: tuple[Algorithm, ...] = ("als", "bpr", "item_knn", "ease", "hybrid")
#: How long a training waits to try again after the feature-store or Redis did not answer.
TRANSIENT_RETRY_SECONDS = 3


class Settings(TaskQueueSettings, FeatureStoreClientSettings):
    service_name: str = "retraining-worker"
    feature_store_timeout_seconds: float = Field(default=300.0, gt=0)

    algorithm: Algorithm = Field(
        default="als",
        description="The recipe trained when no search runs and there is no winner to refit.",
    )
    factors: int = Field(default=64, ge=2, le=1024)
    regularization: float = Field(default=0.05, ge=0)
    alpha: float = Field(default=1.0, gt=0)
    iterations: int = Field(default=15, ge=1, le=500)
    learning_rate: float = Field(default=0.01, gt=0, description="BPR only.")
    random_seed: int = 42
    training_threads: int = Field(default=0, ge=0, description="0: every core.")

    training_budget_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A search's time budget, the final fits included (a share goes to them).",
    )
    search_algorithms: list[Algorithm] = Field(
        default_factory=lambda: list(ALGORITHMS),
        min_length=1,
        description="The algorithms a search tries.",
    )
    search_max_trials: int = Field(
        default=0, ge=0, description="Cap on a search's trials; 0: as many as the budget allows."
    )
    scheduled_search_seconds: float = Field(
        default=7 * 24 * 3600, gt=0, description="Beat period of the full search."
    )

    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="The most recent share of interactions held out."
    )
    evaluation_k: int = Field(default=10, ge=1, le=100)
    gate_min_lift: float = Field(
        default=0.05, description="Challenger precision@k must beat popularity by this fraction."
    )
    champion_tolerance: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="Challenger precision@k may trail the active model's by at most this fraction.",
    )
    keep_model_versions: int = Field(
        default=5,
        ge=2,
        description="Artifacts kept; older ones are deleted (never the active "
        "or the previous one).",
    )
    keep_snapshots: int = Field(
        default=3, ge=1, description="Snapshot bundles kept, and the active version's."
    )
    keep_rejected_artifacts: bool = Field(
        default=True,
        description="Fit and write a version the offline gate rejected too (recorded as "
        "rejected, never activated by hand), so an online experiment can try it: offline "
        "metrics and online behaviour disagree often enough to be worth a canary. Costs one "
        "fit per rejected training.",
    )
    keep_model_records: int = Field(
        default=100,
        ge=2,
        description="Registry records (lineage, metrics) kept; older versions are forgotten.",
    )
    prune_seconds: float = Field(
        default=3600, gt=0, description="How often old versions and snapshots are pruned."
    )
    erasure_rewrite_seconds: float = Field(
        default=3600,
        gt=0,
        description="How often snapshots and artifacts are rewritten without erased users "
        "(also right after every erasure): the bound on how long an artifact holds one.",
    )

    task_time_limit_seconds: int = Field(default=3600, ge=10)
    #: On SIGTERM, how long running tasks may still run before they are cancelled and given
    #: back to their queue at once (inside the pod's 300 s grace period).
    worker_soft_shutdown_seconds: float = Field(default=240, ge=0)
    max_deliveries: int = Field(
        default=3, ge=1, description="A task delivered more often is given up."
    )
    lock_ttl_seconds: int = Field(default=60, ge=5)
    beat_lock_timeout_seconds: int = Field(
        default=60,
        ge=10,
        description="RedBeat's lock, which keeps a second beat waiting: renewed on every beat "
        "loop (5 s), it lets the waiting beat take over this long (plus one loop) after the "
        "beat holding it died.",
    )
    scheduled_retrain_seconds: float = Field(default=6 * 3600, gt=0)
    drift_check_seconds: float = Field(default=300, gt=0, description="Beat period of the check.")
    drift_window_hours: int = Field(
        default=24, ge=1, le=48, description="Hour buckets of recent traffic compared."
    )
    drift_min_events: int = Field(
        default=1000, ge=1, description="Fewer events in the window: no verdict, no trigger."
    )
    drift_top_items: int = Field(
        default=50, ge=1, description="PSI bins: top items a side, at most."
    )
    #: PSI names one top item of each side (plus "other") per this many of the window's events,
    #: so that chance alone stays far below the threshold on a small window
    #: (``psi.top_items_for``).
    drift_events_per_bin: int = Field(default=100, ge=1)
    #: PSI's reference: the training snapshot's newest interactions, this many times the
    #: window's events (0: the whole snapshot; see ``drift.TrainingProfile.reference_counts``).
    drift_reference_factor: int = Field(default=4, ge=0)
    drift_psi_epsilon: float = Field(default=1e-4, gt=0, lt=0.01)
    drift_psi_threshold: float = Field(default=0.2, gt=0)
    drift_unknown_share_threshold: float = Field(default=0.3, gt=0, le=1)
    drift_cooldown_seconds: int = Field(
        default=6 * 3600, ge=1, description="At most one drift-triggered retrain this often."
    )
    metrics_host: str = Field(default="127.0.0.1", description="0.0.0.0 in containers.")
    metrics_port: int = Field(default=8301, ge=0, le=65535, description="0: no health server.")

    rollback_window_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        description="A version promoted this recently is rolled back if its hit rate falls.",
    )
    rollback_margin: float = Field(
        default=0.2, gt=0, lt=1, description="Fraction of the predecessor's hit rate it may lose."
    )
    rollback_min_events: int = Field(
        default=200, ge=1, description="Attributed events each version needs before judging."
    )

    @property
    def search_budget_seconds(self) -> float:
        """The search's share of the budget: the rest is for judging the winner on the
        holdout and fitting the served model."""
        # Never most of the task's hard time limit either: the task would be killed.
        return min(self.training_budget_seconds * 0.7, self.task_time_limit_seconds * 0.5)

    @property
    def locked_retry_seconds(self) -> float:
        """How long a training that found the lock taken waits before it tries again: a
        quarter of the lock's time to live (15 s by default), so one whose holder died starts
        soon after the lock has expired."""
        return self.lock_ttl_seconds / 4

    @model_validator(mode="after")
    def _visibility_outlasts_time_limit(self) -> Settings:
        # A retry's message is delivered at once and waits in the worker for its countdown,
        # then runs: Redis must not give it to another worker meanwhile.
        countdown = max(self.locked_retry_seconds, TRANSIENT_RETRY_SECONDS)
        if self.broker_visibility_timeout_seconds <= self.task_time_limit_seconds + countdown:
            raise ValueError(
                "broker_visibility_timeout_seconds "
                f"({self.broker_visibility_timeout_seconds}) must exceed "
                f"task_time_limit_seconds ({self.task_time_limit_seconds}) plus the "
                f"{countdown:g} s a retried training waits (a quarter of lock_ttl_seconds, at "
                f"least {TRANSIENT_RETRY_SECONDS} s): Redis delivers a message again once it "
                "has been out that long, and a task still running or waiting would run twice"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
