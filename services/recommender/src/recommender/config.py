"""Recommender settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from recsys_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "recommender"
    model_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Registry poll interval, a fallback for missed notifications.",
    )
    recommendation_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long a served list is kept to attribute later events to it.",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
