"""Recommender settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from recommender.ranking import RankingOptions
from recsys_shared.settings import ServingSettings


class Settings(ServingSettings):
    service_name: str = "recommender"
    model_memory_limit_mb: int = Field(
        default=4096,
        ge=64,
        description="Memory the versions held may take together (the active one and a running "
        "experiment's variants), estimated from their artifacts before loading; a variant that "
        "does not fit is refused and its users get popular items.",
    )
    shadow_cpu_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="CPU (a share of one core) shadow experiments may spend ranking off the "
        "response path; requests beyond it are not shadowed. 0 turns shadow ranking off.",
    )
    exploration_share: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Share of every page of a user's list given to cold items (no interactions "
        "yet), its last places, chosen by content and marked `exploration`; 0.1 of k=10 is "
        "one slot.",
    )
    similar_exploration_share: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        description="The same for similar-items lists: cold items like the item take this "
        "share of every page.",
    )
    mmr_lambda: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="MMR diversity re-ranking: relevance's weight against similarity to the "
        "items already listed (1: no diversity); unset: off.",
    )

    def ranking(self) -> RankingOptions:
        return RankingOptions(
            exploration_share=self.exploration_share,
            similar_exploration_share=self.similar_exploration_share,
            mmr_lambda=self.mmr_lambda,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
