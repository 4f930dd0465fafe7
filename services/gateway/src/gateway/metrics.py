"""Gateway metric families."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from recsys_shared.metrics import at_zero
from recsys_shared.schemas import Decision, ExperimentMode, FallbackReason

EVENTS_RECEIVED = Counter(
    "recsys_events_received_total",
    "Events received by the gateway, by outcome: accepted, duplicate, rejected.",
    ["outcome"],
)
EVENT_TIMES_CORRECTED = Counter(
    "recsys_event_times_corrected_total",
    "Events dated ahead of the server's clock beyond the allowed skew (a client's fast clock), "
    "stored at the time they were received.",
)
EVENT_REJECTS = Counter(
    "recsys_event_rejects_total", "Invalid events refused at the door, by reason.", ["reason"]
)
FALLBACKS = Counter(
    "recsys_fallbacks_total", "Responses served by a fallback strategy, by reason.", ["reason"]
)
at_zero(FALLBACKS, [FallbackReason.RECOMMENDER_UNAVAILABLE])  # the one the gateway answers
UPSTREAM_ERRORS = Counter(
    "recsys_upstream_errors_total",
    "Failed calls to services behind the gateway.",
    ["service", "error"],
)
BREAKER_OPEN = Gauge(
    "recsys_circuit_breaker_open",
    "1 while a circuit is open: to a recommender replica (its URL) or to the cached lists' "
    'Redis (replica="cache").',
    ["replica"],
)
CACHE_REQUESTS = Counter(
    "recsys_cache_requests_total",
    "Response cache lookups for user recommendations: hit, miss, coalesced (joined a miss).",
    ["result"],
)
RATE_LIMITED = Counter(
    "recsys_rate_limited_total",
    "Requests refused with 429 because their API key was over its limit.",
)
BATCH_LISTS = Histogram(
    "recsys_recommender_batch_lists",
    "Users' lists per call to a recommender (the cache misses of one event-loop turn).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

# ── experiments: the running one's figures, per variant (exported by every replica) ─────────
_VARIANT = ["experiment", "variant"]
EXPERIMENT_EXPOSURES = Gauge(
    "recsys_experiment_exposures",
    "Lists served to the variant's users since the experiment began (shadow: rankings).",
    _VARIANT,
)
EXPERIMENT_CLICKS = Gauge(
    "recsys_experiment_clicks",
    "Events on an item of a list served to the variant (shadow: on an item of its ranking).",
    _VARIANT,
)
EXPERIMENT_CONVERSIONS = Gauge(
    "recsys_experiment_conversions",
    "Purchases of an item of a list served to the variant.",
    _VARIANT,
)
EXPERIMENT_RATE = Gauge(
    "recsys_experiment_rate", "The experiment's metric for the variant (NaN before data).", _VARIANT
)
EXPERIMENT_SHARE = Gauge(
    "recsys_experiment_share", "The variant's traffic share now (shadow: of rankings).", _VARIANT
)
EXPERIMENT_PROGRESS = Gauge(
    "recsys_experiment_progress_ratio",
    "Time the running experiment has run, as a share of its max_duration_seconds: at 1 it "
    "ends inconclusive.",
    ["experiment"],
)
EXPERIMENT_DECISIONS = Counter(
    "recsys_experiment_decisions_total",
    "Experiments ended, by mode and decision (promoted, rolled_back, stopped, inconclusive).",
    ["mode", "decision"],
)
at_zero(EXPERIMENT_DECISIONS, ExperimentMode, [d for d in Decision if d is not Decision.RUNNING])
