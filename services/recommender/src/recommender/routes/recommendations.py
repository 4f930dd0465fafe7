"""The recommender's internal API, called by the gateway.

Parameters are parsed by hand (``recsys_shared.parameters``), as on the gateway's hot routes:
FastAPI's dependency solver would cost more than scoring a user.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from recommender.service import RecommendationService
from recsys_shared.parameters import documented, path_identifier, query_model
from recsys_shared.schemas import RecommendationQuery, Recommendations

router = APIRouter(tags=["recommendations"])


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    openapi_extra=documented(path={"user_id": "User id"}, query=RecommendationQuery),
)
async def recommend_for_user(request: Request) -> Response:
    user_id = path_identifier(request, "user_id")
    query = query_model(request, RecommendationQuery)
    service: RecommendationService = request.state.service
    return Response(await service.for_user(user_id, query), media_type="application/json")


@router.get(
    "/items/{item_id}/similar",
    response_model=Recommendations,
    openapi_extra=documented(path={"item_id": "Item id"}, query=RecommendationQuery),
)
async def similar_items(request: Request) -> Response:
    item_id = path_identifier(request, "item_id")
    query = query_model(request, RecommendationQuery)
    service: RecommendationService = request.state.service
    return Response(await service.similar(item_id, query), media_type="application/json")
