"""How the gateway documents its problem responses in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from recsys_shared.schemas import Problem

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_PROBLEM, "description": "The body is not JSON (or not UTF-8)"},
    401: {**_PROBLEM, "description": "Missing or invalid API key"},
    403: {**_PROBLEM, "description": "The API key's role may not do this"},
    413: {**_PROBLEM, "description": "Request body over the limit"},
    429: {**_PROBLEM, "description": "Over the API key's rate limit; retry after `Retry-After`"},
    422: {**_PROBLEM, "description": "Invalid input; `errors` lists each problem"},
    503: {**_PROBLEM, "description": "A dependency is unavailable; retry after `Retry-After`"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**_PROBLEM, "description": "No such resource"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {**_PROBLEM, "description": "The resource is in a state that does not allow this"}
}
