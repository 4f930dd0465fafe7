"""Feature-store metric families."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from recsys_shared.metrics import at_zero
from recsys_shared.schemas import DeadLetterReason

EVENTS_APPLIED = Counter("recsys_events_applied_total", "Events applied to the features.")
EVENTS_REDELIVERED = Counter(
    "recsys_events_redelivered_total",
    "Stream entries delivered again whose event had already been applied (acknowledged only).",
)
DEAD_LETTERS = Counter(
    "recsys_dead_letters_total", "Events moved to the dead-letter stream, by reason.", ["reason"]
)
at_zero(DEAD_LETTERS, DeadLetterReason)
EVENTS_CLAIMED = Counter(
    "recsys_events_claimed_total", "Pending events claimed from a stalled consumer."
)
BATCH_SECONDS = Histogram(
    "recsys_consumer_batch_duration_seconds",
    "Time to apply one batch read from the stream.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STREAM_LAG = Gauge("recsys_stream_lag_events", "Events in the stream not yet applied by the group.")
STREAM_LENGTH = Gauge("recsys_stream_length_events", "Entries kept in the events stream.")
CONSUMER_HEARTBEAT = Gauge(
    "recsys_consumer_last_batch_timestamp_seconds",
    "When this consumer last completed a read of the stream (proves it is consuming).",
)
SNAPSHOTS = Counter(
    "recsys_snapshots_total", "Training snapshots exported, by quality outcome.", ["outcome"]
)
CONSUMER_FAILURES = Counter(
    "recsys_consumer_failures_total",
    "Reads or applies of a partition that failed and were retried after a back-off, by error.",
    ["error"],
)
EVENTS_ERASED = Counter(
    "recsys_events_erased_total",
    "Stream entries dropped because their user was erased after sending them.",
)
HOUSEKEEPING_FAILURES = Counter(
    "recsys_housekeeping_failures_total", "Housekeeping passes that failed, by job.", ["job"]
)
USERS_FORGOTTEN = Counter(
    "recsys_users_forgotten_total", "Users forgotten after the retention period of silence."
)
CACHE_NONCE_FAILURES = Counter(
    "recsys_cache_nonce_failures_total",
    "Renewals of users' cache nonces that failed after a batch: lists cached for them before "
    "it may be served until they expire (CACHE_TTL_SECONDS).",
)
