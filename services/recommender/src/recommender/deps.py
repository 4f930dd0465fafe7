"""The recommender's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from recommender.model_store import ModelHolder
from recommender.service import RecommendationService
from recommender.variants import VariantModels
from recsys_shared.redis import RedisClient
from recsys_shared.web.state import state_dependency


@dataclass(frozen=True, slots=True)
class RecommenderState:
    """What the routes use, created once in the lifespan (``recommender.main``)."""

    redis: RedisClient
    holder: ModelHolder  # the active version, kept up to date by its watcher
    variants: VariantModels  # versions held beside it for a running experiment
    service: RecommendationService


StateDep = Annotated[RecommenderState, Depends(state_dependency(RecommenderState))]
