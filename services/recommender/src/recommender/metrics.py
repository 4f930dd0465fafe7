"""Recommender metric families."""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from recsys_shared.metrics import LATENCY_BUCKETS, at_zero

RESPONSES = Counter(
    "recsys_recommendations_total",
    "Recommendation lists served, by strategy and the reason a fallback answered.",
    ["endpoint", "strategy", "reason"],
)


@cache
def responses(endpoint: str, strategy: str, reason: str) -> Any:
    """The counter of one (endpoint, strategy, reason): labels() takes a lock and builds a key
    on every call, and there are only a dozen of them."""
    return RESPONSES.labels(endpoint, strategy, reason)


FOLD_INS = Counter(
    "recsys_fold_ins_total", "User vectors recomputed from events newer than the model."
)
SCORING_SECONDS = Histogram(
    "recsys_scoring_duration_seconds",
    "Time to score and rank the catalogue for the users of one call (a batch from the gateway).",
    buckets=LATENCY_BUCKETS,
)
MODEL_VERSION = Gauge("recsys_model_version", "Model version this replica serves (0: none).")
MODEL_CREATED = Gauge(
    "recsys_model_created_timestamp_seconds", "When the served model version was trained."
)
MODEL_LOAD_SECONDS = Histogram(
    "recsys_model_load_duration_seconds",
    "Time to read, verify and prepare a model version.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MODEL_LOAD_FAILURES = Counter(
    "recsys_model_load_failures_total", "Model versions that failed to load (previous kept)."
)
VARIANT_MODELS = Gauge(
    "recsys_variant_models", "Experiment versions held in memory beside the active one."
)
MODEL_MEMORY_BYTES = Gauge(
    "recsys_model_memory_bytes",
    "Estimated memory of the versions held (the active one and experiment variants).",
)


class VariantRefusal(StrEnum):
    """Why a replica did not load an experiment's version."""

    MEMORY = "memory"  # over the replica's memory bound for versions
    ARTIFACT = "artifact"  # the version has no artifact, or a broken one
    UNKNOWN = "unknown"  # no such version


class ShadowOutcome(StrEnum):
    """What became of a request a shadow version was to rank."""

    RANKED = "ranked"
    OVER_BUDGET = "over_budget"  # over the CPU share, or the queue is full
    NOT_PERSONALISED = "not_personalised"
    VERSION_UNAVAILABLE = "version_unavailable"
    RECORD_LOST = "record_lost"


VARIANT_LOAD_REFUSALS = Counter(
    "recsys_variant_load_refusals_total",
    "Experiment versions not loaded, by reason (memory bound, broken artifact, unknown).",
    ["reason"],
)
SHADOW_RANKINGS = Counter(
    "recsys_shadow_rankings_total",
    "Shadow rankings, by outcome: ranked, or skipped (over the CPU budget, not personalised, "
    "version unavailable, record lost).",
    ["outcome"],
)
at_zero(VARIANT_LOAD_REFUSALS, VariantRefusal)
at_zero(SHADOW_RANKINGS, ShadowOutcome)
SHADOW_SECONDS = Counter(
    "recsys_shadow_seconds_total", "Time spent ranking for shadow experiments."
)
