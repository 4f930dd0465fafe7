"""The recommender's internal API, called by the gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from recommender.deps import ServiceDep
from recsys_shared.schemas import Identifier, Recommendations
from recsys_shared.web import RecommendationQueryDep as QueryDep

router = APIRouter(tags=["recommendations"])


@router.get("/users/{user_id}/recommendations", response_model=Recommendations)
async def recommend_for_user(
    user_id: Annotated[Identifier, Path()], query: QueryDep, service: ServiceDep
) -> Recommendations:
    return await service.for_user(user_id, query)


@router.get("/items/{item_id}/similar", response_model=Recommendations)
async def similar_items(
    item_id: Annotated[Identifier, Path()], query: QueryDep, service: ServiceDep
) -> Recommendations:
    return await service.similar(item_id, query)
