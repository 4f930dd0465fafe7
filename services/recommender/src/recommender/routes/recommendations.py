"""The recommender's internal API, called by the gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from recommender.deps import ServiceDep
from recsys_shared.schemas import Identifier, Recommendations
from recsys_shared.web import RecommendationQueryDep as QueryDep
from recsys_shared.web import model_response

router = APIRouter(tags=["recommendations"])


@router.get("/users/{user_id}/recommendations", response_model=Recommendations)
async def recommend_for_user(
    user_id: Annotated[Identifier, Path()], query: QueryDep, service: ServiceDep
) -> Response:
    return model_response(await service.for_user(user_id, query))


@router.get("/items/{item_id}/similar", response_model=Recommendations)
async def similar_items(
    item_id: Annotated[Identifier, Path()], query: QueryDep, service: ServiceDep
) -> Response:
    return model_response(await service.similar(item_id, query))
