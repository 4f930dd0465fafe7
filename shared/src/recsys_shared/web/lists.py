"""The answer of a hot list route (a user's recommendations, an item's similar items), the same
at the gateway and at the recommenders: parsed by hand for the fast lane, answered with the JSON
the service rendered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from recsys_shared.fastpath.parameters import path_identifier, query_model
from recsys_shared.schemas import RecommendationQuery

#: A service's list for one subject (a user or an item id), as JSON it rendered or validated.
ListOf = Callable[[str, RecommendationQuery], Awaitable[str | bytes]]


async def list_response(request: Request, path_name: str, list_of: ListOf) -> Response:
    """``list_of`` the path's id ``path_name`` under the query string's options."""
    subject = path_identifier(request, path_name)
    query = query_model(request, RecommendationQuery)
    return Response(await list_of(subject, query), media_type="application/json")
