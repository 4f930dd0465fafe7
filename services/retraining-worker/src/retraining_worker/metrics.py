"""Retraining-worker metric families (collected across the Celery pool's processes)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRAINING_RUNS = Counter(
    "recsys_training_runs_total",
    "Training runs by outcome: published, rejected (gate), refused (data quality), unchanged.",
    ["outcome"],
)
TRAINING_SECONDS = Histogram(
    "recsys_training_duration_seconds",
    "Time to train, evaluate and (when published) fit the served model.",
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
TASKS = Counter(
    "recsys_celery_tasks_total",
    "Celery tasks finished in this worker, by task and state.",
    ["task", "state"],
)

# Every outcome exists from the start at 0, so increase() over a window sees the first run too.
for _outcome in ("published", "rejected", "refused", "unchanged", "abandoned"):
    TRAINING_RUNS.labels(_outcome)
