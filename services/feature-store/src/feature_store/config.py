"""Feature-store settings."""

from __future__ import annotations

import socket
from functools import lru_cache

from pydantic import Field

from recsys_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "feature-store"

    # A snapshot of millions of interactions takes minutes: the default allows for it.
    request_timeout_seconds: float = Field(default=600.0, gt=0, le=3600)
    consumer_name: str = Field(
        default_factory=socket.gethostname,
        description="Stable per replica, so a restarted replica re-reads its own pending events.",
    )
    consumer_batch_size: int = Field(
        default=1000,
        ge=1,
        le=5000,
        description=(
            "Events per read and apply script. A full batch holds Redis for its script (~17 ms "
            "at 1,000 on the 2-core reference machine, only while a backlog builds): 500 keeps "
            "that stall shorter for reads at ~8% less throughput (docs/benchmarks.md)."
        ),
    )
    consumer_block_ms: int = Field(default=1000, ge=10, le=10_000)
    claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="Pending this long, an event is claimed by another replica.",
    )
    claim_interval_seconds: float = Field(default=5.0, gt=0)
    trim_interval_seconds: float = Field(default=2.0, gt=0)
    consumer_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        description="/healthz fails when a partition's reader has made no read for this long "
        "while Redis answers PING (a stuck consumer), so the replica is restarted.",
    )
    dead_letters_max: int = Field(
        default=10_000, ge=100, description="Dead letters kept per partition (oldest go first)."
    )
    # Popular lists trail the events by about this much, against a popularity that decays
    # over days. Each pass sums every item changed since the last once, however many events
    # it had: under 10,000 events/s over 20,000 items, 5 s instead of 0.5 s took about a tenth
    # off Redis's and the feature-store's CPU per event (docs/benchmarks.md, "Ingestion").
    popularity_merge_seconds: float = Field(
        default=5.0, gt=0, description="How often partitions' popularity is summed for reads."
    )
    popularity_full_merge_seconds: float = Field(
        default=600.0, gt=0, description="How often every item's popularity is summed again."
    )
    housekeeping_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the retention and pruning pass runs."
    )
    user_retention_days: float = Field(
        default=365.0,
        gt=0,
        description="A user from whom no event was received for this long is forgotten with "
        "everything they own (server time of receipt, not the event's own timestamp).",
    )
    erasure_tombstone_days: float = Field(
        default=30.0,
        gt=0,
        description="How long an erased user's digest is kept to drop their in-flight events; "
        "must exceed how long events may wait in the stream and the artifact rewrite period.",
    )
    erasure_resweep_seconds: float = Field(
        default=40.0,
        ge=0,
        description="An erased user's cached lists and served-list records are swept again "
        "this long after the erasure: a list computed from features read just before it may "
        "be stored after it. Above the serving services' REQUEST_TIMEOUT_SECONDS; 0: no "
        "second sweep.",
    )
    consumer_forget_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="A consumer (replica) silent this long with nothing pending is removed "
        "from the consumer groups and the heartbeats.",
    )
    deleted_item_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="A deleted item stays unavailable at least this long, and while a model "
        "that knows it can be activated; then every trace of it goes, histories included.",
    )

    history_cap: int = Field(default=5000, ge=1, description="Most recent items kept per user.")
    popularity_half_life_days: float = Field(default=30.0, gt=0)

    min_users: int = Field(default=10, ge=1)
    min_items: int = Field(default=10, ge=1)
    min_interactions: int = Field(default=100, ge=1)
    max_user_share: float = Field(default=0.05, gt=0, le=1, description="Of all interactions.")
    max_item_share: float = Field(default=0.2, gt=0, le=1)
    max_reject_share: float = Field(default=0.2, ge=0, le=1, description="Of all events received.")
    max_duplicate_share: float = Field(default=0.5, ge=0, le=1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
