"""Recommendations: for a user, similar to an item, popular.

The read path's hot routes: each takes the ``Request`` and parses its parameters by hand with
``recsys_shared.fastpath.parameters`` (FastAPI's dependency solver would cost more than a cache
hit), and declares them for the OpenAPI document from the same models. They are served on the
fast lane (see ``recsys_shared/fastpath/README.md``), so they take no dependencies: the
client's key is checked by a call in each endpoint, and the gateway's state is read with
``lifespan_state``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.auth import CLIENT_ROLES, SECURITY_SCHEME, authorize_client
from gateway.deps import GatewayState
from gateway.errors import NOT_FOUND, PROBLEM_RESPONSES
from recsys_shared.fastpath.parameters import documented, query_model
from recsys_shared.schemas import RecommendationQuery, Recommendations
from recsys_shared.web.lists import list_response
from recsys_shared.web.state import lifespan_state

router = APIRouter(prefix="/v1", tags=["recommendations"], responses=PROBLEM_RESPONSES)


def _client_route(
    path: dict[str, str] | None = None, *, for_a_user: bool = False
) -> dict[str, Any]:
    """The OpenAPI extras of a hand-parsed list route: its path ids, the list's options in
    the query (``exclude_seen`` only where there is a user), and the client key it checks."""
    return documented(
        path=path,
        query=RecommendationQuery,
        security_scheme=SECURITY_SCHEME,
        roles=CLIENT_ROLES,
        unused=() if for_a_user else ("exclude_seen",),
    )


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    summary="Top-k items for a user",
    description=(
        "Personalised when the model knows the user or the items they interacted with (their "
        "newest events are folded in without a retrain); otherwise popular items, marked as "
        "such in `strategy` and `fallback_reason`. An unknown user is never a 404."
    ),
    openapi_extra=_client_route({"user_id": "User id"}, for_a_user=True),
)
async def recommendations_for_user(request: Request) -> Response:
    await authorize_client(request)
    reads = lifespan_state(request, GatewayState).reads
    # JSON as it was validated: from the cache, or the recommender's body (see clients.Answer).
    return await list_response(request, "user_id", reads.for_user)


@router.get(
    "/items/popular",
    response_model=Recommendations,
    summary="Time-decayed popular items, overall or in a category",
    openapi_extra=_client_route(),
)
async def popular_items(request: Request) -> Response:
    await authorize_client(request)
    query = query_model(request, RecommendationQuery)
    reads = lifespan_state(request, GatewayState).reads
    return Response(await reads.popular(query), media_type="application/json")


@router.get(
    "/items/{item_id}/similar",
    response_model=Recommendations,
    summary="Items similar to an item",
    responses=NOT_FOUND,
    openapi_extra=_client_route({"item_id": "Item id"}),
)
async def similar_items(request: Request) -> Response:
    await authorize_client(request)
    reads = lifespan_state(request, GatewayState).reads
    return await list_response(request, "item_id", reads.similar)
