"""Every Redis key, stream, channel, lock and hash field of the system, built in one place.

Keys are ``rs:`` + a path joined with ``:``. An identifier may contain ``:``, harmlessly: a key
embeds one last or in a fixed position; only ``data_move.classify`` parses keys back.

**Where each family lives.** Three Redis deployments hold the system's own keys:

- the *data tier* (``REDIS_URL``: one Redis, or a Redis Cluster): events, features, the
  catalogue, the model registry, drift counters, locks;
- the *ephemeral* Redis (``EPHEMERAL_REDIS_URL``; else lists and records on the data tier,
  rate limits per replica): cached lists, served-list records, rate-limit counters;
- the *broker* (``CELERY_BROKER_URL``, a single node): Celery's queues and results, RedBeat's
  schedule, and the task records and delivery counts that belong with them.

**Hash tags: one slot per atomic unit.** On a cluster a Lua script may only touch keys of one
hash slot, so every family that a script writes together carries the same hash tag (the part
in braces, always the first braces of the key, so a user id with braces in it cannot move it):

- ``{p<n>}``, a *partition*: events are spread over ``EVENT_PARTITIONS`` streams by a hash of
  the user id; a partition's stream, its dead letters, its users' state and idempotency
  markers, its erasure tombstones, its per-item popularity and drift counters and its
  pipeline counters share the tag, so ingesting (markers + ``XADD``) and applying (features +
  ``XACK``) are each one script on one slot;
- ``{catalogue}``: items, categories, availability, the catalogue's counters, the *merged*
  popularity sets that serving reads (per-partition popularity is summed into them by the
  feature-store's merger);
- ``{models}``: the registry (versions, active pointer, sequence), the training lock it checks;
- ``{experiments}``: experiments' definitions and states (their counters are per partition).

Everything else (reports, locks, single counters) is one key per slot and needs no tag. Who
writes: the gateway events, markers, cached lists, rate limits, exposures; the recommenders
served-list records, experiment lists, shadow counts; the feature-store the rest of a
partition and the catalogue; the worker the registry and drift reports.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

PREFIX = "rs"


def key(*parts: str | int) -> str:
    """Join parts into one namespaced key: ``key("models", "active")`` → ``rs:models:active``."""
    return ":".join((PREFIX, *(str(part) for part in parts)))


# ── hash fields (scripts take them as arguments, so no name is written twice) ─────────────
#: The one field of an events-stream entry: the StoredEvent's JSON.
EVENT_FIELD = "e"
#: A dead letter: where it was in the stream, why it could not be applied (a code and a
#: detail), the entry.
DEAD_STREAM_ID, DEAD_REASON, DEAD_DETAIL, DEAD_ENTRY = "stream_id", "reason", "detail", "entry"
#: A user's meta hash: ``epoch`` (bumped by every applied event) and when the last applied.
META_EPOCH, META_UPDATED_AT = "epoch", "updated_at"
#: A partition's pipeline counters.
STAT_ACCEPTED = "accepted"  # events stored by the gateway
STAT_DUPLICATES = "duplicates"  # events whose (user, event_id) was already stored
STAT_APPLIED = "applied"  # events applied to the features
STAT_REDELIVERED = "redelivered"  # deliveries of an entry already applied (not re-applied)
STAT_DEAD_LETTERS = "dead_letters"  # entries moved to the dead letters
STAT_ERASED = "erased"  # entries dropped because their user was erased after sending them
PARTITION_COUNTERS = tuple(
    [STAT_ACCEPTED, STAT_DUPLICATES, STAT_APPLIED, STAT_REDELIVERED, STAT_DEAD_LETTERS, STAT_ERASED]
)
#: An item's hash.
ITEM_TITLE, ITEM_CATEGORIES = "title", "categories"
ITEM_AVAILABLE, ITEM_UPDATED_AT = "available", "updated_at"
#: A model version's hash: the lineage JSON and the mutable status.
MODEL_INFO, MODEL_STATUS, MODEL_STATUS_REASON = "info", "status", "status_reason"
MODEL_ACTIVATED_AT, MODEL_ARTIFACT = "activated_at", "artifact"
MODEL_REPLACED_BY = "replaced_by"  # set on a retired version: the one activated after it
MODEL_EXPERIMENTS = "experiments"  # JSON list: what experiments did with the version

HIT_EVENTS_SUFFIX, HIT_HITS_SUFFIX = ":events", ":hits"


def hit_fields(served_by: str) -> tuple[str, str]:
    """A drift hits hash's two counters for the lists one version (or ``popular``) served:
    events carrying their recommendation id, and those on an item of the list."""
    return served_by + HIT_EVENTS_SUFFIX, served_by + HIT_HITS_SUFFIX


def user_digest(user_id: str) -> str:
    """What an erasure tombstone keeps of a user id: 16 bytes of BLAKE2b, in hex."""
    return hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


# ── partitions: the events and everything a script writes with them ──────────────────────
EVENTS_GROUP = "feature-store"
USER_ITEMS_SUFFIX, USER_TIMES_SUFFIX = ":items", ":times"
USER_META_SUFFIX, USER_MARKERS_SUFFIX = ":meta", ":idem"
USER_LISTS_SUFFIX = ":lists"  # lists an experiment served (data tier, never shed): attribution
USER_SUFFIXES: tuple[str, ...] = (USER_ITEMS_SUFFIX, USER_TIMES_SUFFIX, USER_META_SUFFIX)
USER_SUFFIXES += (USER_MARKERS_SUFFIX, USER_LISTS_SUFFIX)  # every per-user key's: erasure, moves
#: One idempotency marker: an 8-byte digest of the event_id, then a 4-byte big-endian second.
MARKER_DIGEST_BYTES, MARKER_BYTES = 8, 12


def partition_of(user_id: str, count: int) -> int:
    """The partition of a user: CRC-32 of the id, stable across processes and machines."""
    return zlib.crc32(user_id.encode()) % count if count > 1 else 0


@dataclass(frozen=True, slots=True)
class Partition:
    """The keys of one partition; every one starts with the partition's hash tag."""

    number: int
    base: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", f"{PREFIX}:{{p{self.number}}}")

    @property
    def events(self) -> str:  # stream of accepted events, read by the consumer group
        return f"{self.base}:events"

    @property
    def dead_letters(self) -> str:  # stream of entries not applied: capped, replayable
        return f"{self.base}:dead"

    @property
    def stats(self) -> str:  # hash of the partition's counters (PARTITION_COUNTERS)
        return f"{self.base}:stats"

    @property
    def users(self) -> str:  # sorted set user → when their last event came: retention reads it
        return f"{self.base}:users"

    @property
    def popular(self) -> str:  # sorted set item → this partition's decayed weight (merged)
        return f"{self.base}:popular"

    @property
    def popular_dirty(self) -> str:  # set of items whose weight changed since the last merge
        return f"{self.base}:popular:dirty"

    @property
    def erased(self) -> str:  # hash user_digest → when erased: older events dropped; no id kept
        return f"{self.base}:erased"

    @property
    def heartbeats(self) -> str:  # hash consumer → when it last finished a read
        return f"{self.base}:heartbeats"

    @property
    def user_prefix(self) -> str:  # every per-user key's start (a script adds id and USER_*)
        return f"{self.base}:u:"

    def user_items(self, user_id: str) -> str:  # hash item → weight (training's confidence)
        return f"{self.base}:u:{user_id}{USER_ITEMS_SUFFIX}"

    def user_times(self, user_id: str) -> str:  # sorted set item → latest interaction: the cap
        return f"{self.base}:u:{user_id}{USER_TIMES_SUFFIX}"

    def user_meta(self, user_id: str) -> str:  # hash of META_EPOCH and META_UPDATED_AT
        return f"{self.base}:u:{user_id}{USER_META_SUFFIX}"

    def markers(self, user_id: str) -> str:
        """The user's idempotency markers: one string of ``MARKER_BYTES`` records (an 8-byte
        digest of an event_id and the second it was stored), oldest first."""
        return f"{self.base}:u:{user_id}{USER_MARKERS_SUFFIX}"

    def user_lists(self, user_id: str) -> str:
        """Hash recommendation_id → ``ServedList`` JSON of the lists served to the user within
        an experiment (a shadow's under ``<id>:shadow``): at most ``LISTS_PER_USER`` (see
        ``experiments.lists``), expiring ``RECOMMENDATION_TTL_SECONDS`` after the newest."""
        return f"{self.base}:u:{user_id}{USER_LISTS_SUFFIX}"

    def user_keys(self, user_id: str) -> tuple[str, ...]:
        """Every key that holds the user's own state in this partition."""
        return tuple(f"{self.base}:u:{user_id}{suffix}" for suffix in USER_SUFFIXES)

    def accepted(self, second: int) -> str:  # events accepted in one second (throughput)
        return f"{self.base}:accepted:{second}"

    def applied(self, second: int) -> str:  # events applied in one second (throughput)
        return f"{self.base}:applied:{second}"

    def drift(self, hour: int) -> DriftBucket:
        return DriftBucket(f"{self.base}:drift:{hour}")

    @property
    def experiment_prefix(self) -> str:
        return f"{self.base}:experiment:"

    def experiment(self, experiment_id: str) -> str:
        """Hash ``variant_counter(...)`` → count, for this partition's users: lists served
        (added by the gateways) and events attributed to them (by the apply script, exactly
        once each). Deleted with the experiment."""
        return f"{self.experiment_prefix}{experiment_id}"


@dataclass(frozen=True, slots=True)
class DriftBucket:
    """One hour of a partition's recent-traffic counters, read by the drift monitor."""

    base: str

    @property
    def items(self) -> str:  # hash item_id → events applied in this hour
        return f"{self.base}:items"

    @property
    def users(self) -> str:  # hash user_id → events applied in this hour
        return f"{self.base}:users"

    @property
    def types(self) -> str:  # hash event type → events applied in this hour
        return f"{self.base}:types"

    @property
    def hits(self) -> str:  # hash of hit_fields(version): online hit rate per serving version
        return f"{self.base}:hits"


@dataclass(frozen=True, slots=True)
class Partitions:
    """All the partitions of a deployment (``EVENT_PARTITIONS`` of them)."""

    count: int
    all: tuple[Partition, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"EVENT_PARTITIONS must be at least 1, not {self.count}.")
        object.__setattr__(self, "all", tuple(Partition(n) for n in range(self.count)))

    def of(self, user_id: str) -> Partition:
        return self.all[partition_of(user_id, self.count)]


THROUGHPUT_KEY_TTL_SECONDS = 600
DRIFT_WINDOW_TTL_SECONDS = 48 * 3600


def drift_hour(now: float) -> int:
    return int(now // 3600)


# ── catalogue and merged popularity: one slot, so an item's write is one script ───────────
CATALOGUE = f"{PREFIX}:{{catalogue}}"
ITEM_PREFIX = f"{CATALOGUE}:item:"
ITEMS = f"{CATALOGUE}:items"  # set of every item id in the catalogue
UNAVAILABLE_ITEMS = f"{CATALOGUE}:unavailable"  # unavailable or deleted: never recommended
DELETED_ITEMS = f"{CATALOGUE}:deleted"  # sorted set item → when deleted (pruned later)
CATALOGUE_VERSION = f"{CATALOGUE}:version"  # bumped on every catalogue write
CATALOGUE_REMOVALS = f"{CATALOGUE}:removals"  # bumped when an item stops being recommendable
CATEGORY_PREFIX = f"{CATALOGUE}:category:"
POPULAR = f"{CATALOGUE}:popular"  # sorted set item → decayed popularity, every partition
POPULAR_CATEGORY_PREFIX = f"{CATALOGUE}:popular:category:"
POPULAR_DIRTY = f"{CATALOGUE}:popular:dirty"  # items whose availability or categories changed


def item(item_id: str) -> str:
    """Hash: ``ITEM_TITLE``, ``ITEM_CATEGORIES`` (JSON), ``ITEM_AVAILABLE``, ``ITEM_UPDATED_AT``."""
    return ITEM_PREFIX + item_id


def category_items(category: str) -> str:  # set of a category's items (any text: last part)
    return CATEGORY_PREFIX + category


def popular_in(category: str) -> str:
    return POPULAR_CATEGORY_PREFIX + category


# ── models: the registry, one slot ────────────────────────────────────────────────────────
MODELS_BASE = f"{PREFIX}:{{models}}"
MODEL_VERSION_SEQUENCE = f"{MODELS_BASE}:sequence"
MODEL_ACTIVE = f"{MODELS_BASE}:active"
MODELS = f"{MODELS_BASE}:versions"  # sorted set version → version
MODEL_PREFIX = f"{MODELS_BASE}:version:"
MODEL_SNAPSHOT_PREFIX = f"{MODELS_BASE}:snapshot:"
MODEL_EVENTS_CHANNEL = key("model", "events")  # pub/sub: a version activated, an item removed
TRAINING_LOCK = f"{MODELS_BASE}:lock:training"  # one training; its record checks it (fencing)


def model(version: int) -> str:
    """Hash: ``MODEL_INFO`` (lineage JSON), ``MODEL_STATUS``, ``MODEL_STATUS_REASON``,
    ``MODEL_ACTIVATED_AT``, ``MODEL_ARTIFACT``."""
    return f"{MODEL_PREFIX}{version}"


def model_for_snapshot(snapshot_id: str) -> str:
    """Version trained on a snapshot: makes a redelivered training task idempotent."""
    return MODEL_SNAPSHOT_PREFIX + snapshot_id


# ── experiments: their definitions and states, one slot ───────────────────────────────────
EXPERIMENTS_BASE = f"{PREFIX}:{{experiments}}"
EXPERIMENT_SEQUENCE = f"{EXPERIMENTS_BASE}:sequence"
EXPERIMENT_RUNNING = f"{EXPERIMENTS_BASE}:running"  # the id of the experiment running, if any
EXPERIMENTS = f"{EXPERIMENTS_BASE}:all"  # sorted set id → when it was created
EXPERIMENT_PREFIX = f"{EXPERIMENTS_BASE}:experiment:"
#: An experiment's hash fields: its definition (as created) and its state (as it goes on).
EXPERIMENT_DEFINITION, EXPERIMENT_STATE = "definition", "state"
#: Counter suffixes of a variant in a partition's experiment hash: lists served, events
#: carrying one of its lists' ids, those on an item of the list, purchases among them. Shadow
#: rankings count as the variant ``shadow`` (``overlap`` sums, in thousandths, the share of the
#: served list's items the shadow's list also had).
VARIANT_EXPOSURES, VARIANT_EVENTS, VARIANT_CLICKS = ":exposures", ":events", ":clicks"
VARIANT_CONVERSIONS, SHADOW_OVERLAP = ":conversions", ":overlap"
VARIANT_GROUPS = 64  # a variant's users are counted in this many groups (variance by user)


def variant_counter(variant: str, group: int | None, suffix: str) -> str:
    """``<variant>/<group><suffix>`` for a group of its users; ``<variant><suffix>`` ungrouped."""
    return f"{variant}{suffix}" if group is None else f"{variant}/{group}{suffix}"


def experiment(experiment_id: str) -> str:
    """Hash: ``EXPERIMENT_DEFINITION`` and ``EXPERIMENT_STATE`` (JSON)."""
    return f"{EXPERIMENT_PREFIX}{experiment_id}"


# ── pipeline, reports and locks: one key each ─────────────────────────────────────────────
PIPELINE_REJECTS = key("pipeline", "rejects")  # hash reason (a bounded set) → count of refusals
PIPELINE_REJECTED = key("pipeline", "rejected")  # events refused at the door (a counter)
DATA_GENERATION = key("pipeline", "generation")  # bumped when users are erased or forgotten
DATA_LAYOUT = key("layout")  # JSON of the DataLayout the data was written in (layout.py)
SNAPSHOT_LATEST = key("snapshot", "latest")  # JSON of the last snapshot and its quality report
DRIFT_LATEST = key("drift", "latest")  # JSON of the latest drift report
DRIFT_HISTORY = key("drift", "history")  # list of report JSON, newest first, capped
DRIFT_HISTORY_LENGTH = 100
DRIFT_RETRAIN_COOLDOWN = key("lock", "drift-retrain")  # SET NX EX: one trigger per cool-down
POPULARITY_MERGE_LOCK = key("lock", "popularity-merge")
HOUSEKEEPING_LOCK = key("lock", "housekeeping")
EXPERIMENT_LOCK = key("lock", "experiments")  # one gateway at a time decides


# ── the broker's Redis (CELERY_BROKER_URL): what belongs with Celery's own keys ───────────
TASK_DELIVERIES_PREFIX = key("task", "deliveries") + ":"
TASK_RECORD_PREFIX = key("task", "record") + ":"
REDBEAT_PREFIX = key("redbeat") + ":"  # RedBeat's schedule entries and its single-beat lock


def task_record(task_id: str) -> str:
    """A task enqueued by the gateway or the drift monitor: other ids are a 404, not PENDING."""
    return TASK_RECORD_PREFIX + task_id


def task_deliveries(task_id: str) -> str:
    """How often a task message was delivered: caps redeliveries of a task that keeps dying."""
    return TASK_DELIVERIES_PREFIX + task_id


# ── the ephemeral Redis: what may be lost ─────────────────────────────────────────────────
RATE_LIMIT_PREFIX = key("ratelimit") + ":"
RECOMMENDATION_PREFIX = key("rec") + ":"
CACHE_PREFIX = key("cache") + ":"


def rate_limit(key_id: str, second: int) -> str:
    """Requests of one API key (its short digest, never the key) in one second, summed over
    the gateway replicas."""
    return f"{RATE_LIMIT_PREFIX}{key_id}:{second}"


def user_scope(user_id: str | None) -> str:  # <length>:<id>: (-: for none): no prefix clash
    return f"{len(user_id)}:{user_id}:" if user_id is not None else "-:"


def recommendation(user_id: str | None, recommendation_id: str) -> str:
    """What was recommended, by which version: attributes later events to it. Under the
    user it was served to (so erasing the user finds it), or ``-`` for lists served to
    nobody in particular (similar and popular items)."""
    return f"{RECOMMENDATION_PREFIX}{user_scope(user_id)}{recommendation_id}"


def recommendations_of(user_id: str) -> str:  # the prefix of every record served to the user
    return RECOMMENDATION_PREFIX + user_scope(user_id)


#: A user's cached lists: the field holding their nonce (renewed by the feature-store after
#: every batch that applies an event of theirs), beside one field per list (``cache_field``).
CACHE_NONCE = "nonce"
#: Fields (lists of different queries or variants, and the nonce) a user's hash of cached
#: lists holds at most: a store past it starts the hash afresh, keeping the nonce.
CACHE_LISTS_PER_USER = 32
#: How long a hash that holds only a nonce is kept (its user sends events, reads no lists).
CACHE_NONCE_TTL_SECONDS = 300


def cached_lists(partition: Partition, user_id: str) -> str:
    """Hash of one user's cached lists (``cache_field`` → entry) and their ``CACHE_NONCE``.
    Tagged with the user's partition: the feature-store renews the nonces of a batch's users
    (one partition) in one script, on a cluster too; erasure deletes the one key."""
    return f"{CACHE_PREFIX}{{p{partition.number}}}:{user_scope(user_id)}"


def cache_field(variant: str, query_digest: str) -> str:
    """A cached list's field: experiment variant (``-`` outside experiments) and query (a
    digest, so a category with ':' in it cannot shift the fields). Never ``CACHE_NONCE``
    (a field always holds a ':'). The entry is stamped with the model version, the removals
    count and the user's nonce it was ranked with, checked on every read (``gateway.cache``)."""
    return f"{variant}:{query_digest}"
