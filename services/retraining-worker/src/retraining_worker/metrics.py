"""Retraining-worker metric families (collected across the Celery pool's processes)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from recsys_shared.metrics import at_zero
from recsys_shared.schemas import DriftStatus, TrainingStatus
from recsys_shared.tasks import CHECK_DRIFT

TRAINING_RUNS = Counter(
    "recsys_training_runs_total",
    "Training runs by outcome (a TrainingStatus): published, rejected (gate), refused (data "
    "quality), unchanged, abandoned.",
    ["outcome"],
)
at_zero(TRAINING_RUNS, TrainingStatus)
TRAINING_SECONDS = Histogram(
    "recsys_training_duration_seconds",
    "Time to train, evaluate and fit the served model (when published, or rejected with "
    "KEEP_REJECTED_ARTIFACTS).",
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
TRAINING_LOCK_LOST = Counter(
    "recsys_training_lock_lost_total",
    "Trainings stopped before publishing because their lock was not renewed in time.",
)
TASKS = Counter(
    "recsys_celery_tasks_total",
    "Celery tasks finished in this worker, by task and state.",
    ["task", "state"],
)
at_zero(TASKS, [CHECK_DRIFT], get_args(DriftStatus))  # what ScheduleStalled counts

# Drift gauges: set by the drift check in a pool process, which is recycled every few tasks;
# "mostrecent" exports the value of the latest check, whichever process (alive or not) made it.
DRIFT_PSI = Gauge(
    "recsys_drift_item_psi",
    "PSI of item popularity: training data of the active model vs the recent window.",
    multiprocess_mode="mostrecent",
)
DRIFT_UNKNOWN_SHARE = Gauge(
    "recsys_drift_unknown_share",
    "Share of the recent window's events on users or items the active model does not know.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
DRIFT_HIT_RATE = Gauge(
    "recsys_drift_online_hit_rate",
    "Share of events carrying a recommendation id that were on a recommended item.",
    ["model_version"],
    multiprocess_mode="mostrecent",
)
DRIFT_TRIGGERS = Counter("recsys_drift_retrains_total", "Retrains the drift monitor enqueued.")
