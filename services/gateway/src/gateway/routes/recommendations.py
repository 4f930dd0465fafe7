"""Recommendations: for a user, similar to an item, popular."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from gateway.auth import ClientAuth
from gateway.deps import ReadsDep
from gateway.errors import NOT_FOUND, PROBLEM_RESPONSES
from recsys_shared.schemas import Identifier, Recommendations
from recsys_shared.web import RecommendationQueryDep, model_response

router = APIRouter(prefix="/v1", tags=["recommendations"], dependencies=[ClientAuth])


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    summary="Top-k items for a user",
    description=(
        "Personalised when the model knows the user or the items they interacted with (their "
        "newest events are folded in without a retrain); otherwise popular items, marked as "
        "such in `strategy` and `fallback_reason`. An unknown user is never a 404."
    ),
    responses=PROBLEM_RESPONSES,
)
async def recommendations_for_user(
    user_id: Annotated[Identifier, Path(description="User id")],
    query: RecommendationQueryDep,
    reads: ReadsDep,
) -> Response:
    result = await reads.for_user(user_id, query)
    # A cache hit is the stored JSON of a list that was validated when it was stored.
    if isinstance(result, str):
        return Response(result, media_type="application/json")
    return model_response(result)


@router.get(
    "/items/popular",
    response_model=Recommendations,
    summary="Time-decayed popular items, overall or in a category",
    responses=PROBLEM_RESPONSES,
)
async def popular_items(query: RecommendationQueryDep, reads: ReadsDep) -> Response:
    return model_response(await reads.popular(query))


@router.get(
    "/items/{item_id}/similar",
    response_model=Recommendations,
    summary="Items similar to an item",
    responses={**PROBLEM_RESPONSES, **NOT_FOUND},
)
async def similar_items(
    item_id: Annotated[Identifier, Path(description="Item id")],
    query: RecommendationQueryDep,
    reads: ReadsDep,
) -> Response:
    return model_response(await reads.similar(item_id, query))
