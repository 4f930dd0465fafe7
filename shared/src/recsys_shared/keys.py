"""Every Redis key, stream, channel and lock name of the system, built in one place.

Keys are ``rs:`` + a path joined with ``:``. Identifiers (user, item, category ids) may contain
``:``; that is harmless because every key that embeds one puts it last or in a fixed position,
and nothing ever parses a key back into its parts. Functions for Lua scripts return *prefixes*
so the script builds per-event keys itself without a literal key string elsewhere.

Who writes what (the online-store pattern): the gateway writes the events stream, dedup markers,
the response cache and rate-limit counters; the feature-store writes everything under
``user``, ``item``, ``popular``, ``pipeline``; the retraining-worker writes the model registry and
drift reports; the recommender writes recommendation records. Everyone else only reads.
"""

from __future__ import annotations

PREFIX = "rs"


def key(*parts: str | int) -> str:
    """Join parts into one namespaced key: ``key("user", "42")`` → ``rs:user:42``."""
    return ":".join((PREFIX, *(str(part) for part in parts)))


# ── ingestion ─────────────────────────────────────────────────────────────────────────────
EVENTS_STREAM = key("events")
DEAD_LETTER_STREAM = key("events", "dead")
EVENTS_GROUP = "feature-store"
DEDUP_PREFIX = key("dedup") + ":"  # + event_id: set by the gateway when an event enters


def dedup(event_id: str) -> str:
    return DEDUP_PREFIX + event_id


PIPELINE_STATS = key("pipeline", "stats")  # hash of counters: accepted, applied, rejected:<reason>
PIPELINE_REJECTS = key("pipeline", "rejects")  # hash reason → count of events refused at the door
# Per-second counters (+ unix second), kept a few minutes: throughput across every replica.
PIPELINE_ACCEPTED_PREFIX = key("pipeline", "accepted") + ":"
PIPELINE_APPLIED_PREFIX = key("pipeline", "applied") + ":"
THROUGHPUT_KEY_TTL_SECONDS = 600


def pipeline_accepted(second: int) -> str:
    return f"{PIPELINE_ACCEPTED_PREFIX}{second}"


def pipeline_applied(second: int) -> str:
    return f"{PIPELINE_APPLIED_PREFIX}{second}"


CONSUMER_HEARTBEATS = key("pipeline", "heartbeats")  # hash consumer name → last read time


# ── users ─────────────────────────────────────────────────────────────────────────────────
USERS = key("users")  # set of every user id with a history
USER_PREFIX = key("user") + ":"
USER_ITEMS_SUFFIX = ":items"
USER_TIMES_SUFFIX = ":times"
USER_META_SUFFIX = ":meta"


def user_items(user_id: str) -> str:
    """Hash item_id → interaction weight (confidence for training)."""
    return USER_PREFIX + user_id + USER_ITEMS_SUFFIX


def user_times(user_id: str) -> str:
    """Sorted set item_id → time of the latest interaction; caps the history by recency."""
    return USER_PREFIX + user_id + USER_TIMES_SUFFIX


def user_meta(user_id: str) -> str:
    """Hash with ``epoch`` (a counter bumped by every applied event) and ``updated_at``."""
    return USER_PREFIX + user_id + USER_META_SUFFIX


# ── catalogue and popularity ──────────────────────────────────────────────────────────────
ITEMS = key("items")  # set of every item id in the catalogue
ITEM_PREFIX = key("item") + ":"
UNAVAILABLE_ITEMS = key("items", "unavailable")  # deleted or unavailable: never recommended
CATALOGUE_VERSION = key("items", "version")  # bumped on every catalogue write
CATEGORY_PREFIX = key("category") + ":"
POPULAR = key("popular")  # sorted set item → time-decayed popularity
POPULAR_CATEGORY_PREFIX = key("popular", "category") + ":"


def item(item_id: str) -> str:
    """Hash with ``title``, ``categories`` (JSON list), ``available`` and ``updated_at``."""
    return ITEM_PREFIX + item_id


def category_items(category: str) -> str:
    return CATEGORY_PREFIX + category


def popular_in(category: str) -> str:
    return POPULAR_CATEGORY_PREFIX + category


# ── models ────────────────────────────────────────────────────────────────────────────────
MODEL_VERSION_SEQUENCE = key("model", "sequence")
MODEL_ACTIVE = key("model", "active")
MODELS = key("models")  # sorted set version → created_at
MODEL_EVENTS_CHANNEL = key("model", "events")  # pub/sub: a new active version was published
MODEL_SNAPSHOT_PREFIX = key("model", "snapshot") + ":"
TRAINING_LOCK = key("lock", "training")
TASK_DELIVERIES_PREFIX = key("task", "deliveries") + ":"
TASK_RECORD_PREFIX = key("task", "record") + ":"
REDBEAT_PREFIX = key("redbeat") + ":"  # RedBeat's schedule entries and its single-beat lock
SNAPSHOT_LATEST = key("snapshot", "latest")  # JSON of the last snapshot and its quality report


MODEL_PREFIX = key("model", "version") + ":"


def model(version: int) -> str:
    """Hash: ``info`` (lineage JSON), ``status``, ``status_reason``, ``activated_at``,
    ``artifact``."""
    return f"{MODEL_PREFIX}{version}"


def task_record(task_id: str) -> str:
    """Which task ids the gateway enqueued, so an unknown id is a 404, not a PENDING forever."""
    return TASK_RECORD_PREFIX + task_id


def task_deliveries(task_id: str) -> str:
    """How often a task message was delivered: caps redeliveries of a task that keeps dying."""
    return TASK_DELIVERIES_PREFIX + task_id


def model_for_snapshot(snapshot_id: str) -> str:
    """Version trained on a snapshot: makes a redelivered training task idempotent."""
    return MODEL_SNAPSHOT_PREFIX + snapshot_id


# ── access ────────────────────────────────────────────────────────────────────────────────
RATE_LIMIT_PREFIX = key("ratelimit") + ":"


def rate_limit(key_id: str, second: int) -> str:
    """Requests of one API key (its short digest, never the key) in one second."""
    return f"{RATE_LIMIT_PREFIX}{key_id}:{second}"


# ── serving ───────────────────────────────────────────────────────────────────────────────
RECOMMENDATION_PREFIX = key("rec") + ":"
CACHE_PREFIX = key("cache") + ":"


def recommendation(recommendation_id: str) -> str:
    """What was recommended, to whom, by which version: attributes later events to it."""
    return RECOMMENDATION_PREFIX + recommendation_id


def cache_user_prefix(user_id: str) -> str:
    """Every cached response for one user starts with this, so erasing a user finds them.
    The id is length-prefixed: no user's prefix is a prefix of another user's."""
    return f"{CACHE_PREFIX}user:{len(user_id)}:{user_id}:"


def cache_user(user_id: str, model_version: int | None, epoch: str, query_digest: str) -> str:
    """A cached list: for this user, ranked by this model version, as of this user epoch, for
    this query (a digest, so a category with ':' in it cannot shift the fields)."""
    return f"{cache_user_prefix(user_id)}{model_version or 0}:{epoch}:{query_digest}"


# ── drift monitoring ──────────────────────────────────────────────────────────────────────
# Recent-window counters, one set of hashes per hour bucket (hour = floor(unix time / 3600)),
# written by the feature-store's apply script (and its Python side for online hits), read by the
# retraining-worker's drift monitor. Each bucket expires after DRIFT_WINDOW_TTL_SECONDS.
DRIFT_WINDOW_PREFIX = key("drift", "window") + ":"
DRIFT_WINDOW_TTL_SECONDS = 48 * 3600
DRIFT_LATEST = key("drift", "latest")  # JSON of the latest drift report
DRIFT_HISTORY = key("drift", "history")  # list of report JSON, newest first, capped
DRIFT_HISTORY_LENGTH = 100
DRIFT_RETRAIN_COOLDOWN = key("lock", "drift-retrain")  # SET NX EX: one trigger per cool-down


def drift_hour(now: float) -> int:
    return int(now // 3600)


def drift_window(hour: int) -> str:
    """The prefix of one hour bucket's hashes."""
    return f"{DRIFT_WINDOW_PREFIX}{hour}"


def drift_items(hour: int) -> str:
    """Hash item_id → events applied in this hour."""
    return drift_window(hour) + ":items"


def drift_users(hour: int) -> str:
    """Hash user_id → events applied in this hour."""
    return drift_window(hour) + ":users"


def drift_types(hour: int) -> str:
    """Hash event type → events applied in this hour."""
    return drift_window(hour) + ":types"


def drift_hits(hour: int) -> str:
    """Hash ``<model version>:events`` / ``<model version>:hits`` → events carrying a
    recommendation id served by that version (``popular`` for fallback lists), and how many of
    them were on an item of that recommendation."""
    return drift_window(hour) + ":hits"
