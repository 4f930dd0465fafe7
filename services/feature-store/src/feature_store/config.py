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
    consumer_batch_size: int = Field(default=500, ge=1, le=5000)
    consumer_block_ms: int = Field(default=1000, ge=10, le=10_000)
    claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="Pending this long, an event is claimed by another replica.",
    )
    claim_interval_seconds: float = Field(default=5.0, gt=0)
    trim_interval_seconds: float = Field(default=2.0, gt=0)

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
