"""Recommender settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from recsys_shared.settings import ServingSettings


class Settings(ServingSettings):
    service_name: str = "recommender"
    model_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Registry poll interval, a fallback for missed notifications.",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
