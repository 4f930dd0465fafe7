"""The recommender's internal API, called by the gateway.

Parameters are parsed by hand (``recsys_shared.fastpath.parameters``), as on the gateway's hot
routes: FastAPI's dependency solver would cost more than scoring a user. The gateway asks for users'
lists in batches (``POST /batch/recommendations``); the one-user route answers the same list,
for operators and for a gateway that predates batches.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from recommender.deps import RecommenderState
from recsys_shared.fastpath.parameters import documented, json_body
from recsys_shared.schemas import RecommendationQuery, Recommendations, UserListBatch
from recsys_shared.web.lists import list_response
from recsys_shared.web.state import lifespan_state

router = APIRouter(tags=["recommendations"])
NDJSON = "application/x-ndjson"


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    openapi_extra=documented(path={"user_id": "User id"}, query=RecommendationQuery),
)
async def recommend_for_user(request: Request) -> Response:
    service = lifespan_state(request, RecommenderState).service
    return await list_response(request, "user_id", service.for_user)


@router.get(
    "/items/{item_id}/similar",
    response_model=Recommendations,
    openapi_extra=documented(
        path={"item_id": "Item id"}, query=RecommendationQuery, unused=("exclude_seen",)
    ),
)
async def similar_items(request: Request) -> Response:
    service = lifespan_state(request, RecommenderState).service
    return await list_response(request, "item_id", service.similar)


@router.post(
    "/batch/recommendations",
    response_class=Response,
    responses={200: {"content": {NDJSON: {}}, "description": "One Recommendations per line"}},
    openapi_extra=documented(body=UserListBatch),
)
async def recommend_for_users(request: Request) -> Response:
    """Several users' lists in one call: one ``Recommendations`` JSON per line, in the order
    asked (NDJSON; the rendered JSON holds no line break)."""
    batch = json_body(await request.body(), UserListBatch)
    service = lifespan_state(request, RecommenderState).service
    lists = await service.for_users([(asked.user_id, asked) for asked in batch.requests])
    return Response("\n".join(lists), media_type=NDJSON)
