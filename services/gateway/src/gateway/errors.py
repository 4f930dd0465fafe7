"""How the gateway documents its problem responses in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from recsys_shared.schemas import PROBLEM_MEDIA_TYPE, Problem

# ``model`` puts Problem in the document's schemas; document_problems files it under the
# media type the errors are sent as.
_PROBLEM = {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}
_PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        **_PROBLEM,
        "description": "The body could not be read: not valid gzip, or cut short "
        "(`Content-Encoding: gzip`)",
    },
    401: {**_PROBLEM, "description": "Missing or invalid API key"},
    403: {**_PROBLEM, "description": "The API key's role may not do this"},
    408: {
        **_PROBLEM,
        "description": "The body did not arrive within `REQUEST_TIMEOUT_SECONDS` (30 s); the "
        "connection is closed",
    },
    413: {
        **_PROBLEM,
        "description": "Request body over the limit (`MAX_BODY_BYTES`, 1 MiB by default)",
    },
    415: {
        **_PROBLEM,
        "description": "A `Content-Encoding` other than gzip (or none); `Accept-Encoding` "
        "names gzip",
    },
    429: {**_PROBLEM, "description": "Over the API key's rate limit; retry after `Retry-After`"},
    422: {
        **_PROBLEM,
        "description": "Invalid input, or a body that is not JSON; `errors` lists each problem",
    },
    503: {**_PROBLEM, "description": "A dependency is unavailable; retry after `Retry-After`"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {**_PROBLEM, "description": "No such resource"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {**_PROBLEM, "description": "The resource is in a state that does not allow this"}
}


def problem_response_doc(description: str) -> dict[str, Any]:
    """A route's own problem response in the document: ``{405: problem_response_doc("...")}``."""
    return {**_PROBLEM, "description": description}


def document_problems(app: FastAPI) -> None:
    """Every problem response documented as it is sent: ``application/problem+json`` with
    the Problem schema (FastAPI files a response's ``model`` under the route's own media type,
    JSON or HTML, which no problem is sent as); and only where it can be sent: the routers'
    shared 400, 408 and 415 (a body that cannot be read, arrive or be decoded) where there is a
    body, their 422 where there is input."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # built once and kept by FastAPI; the edits below are idempotent
        for path in document.get("paths", {}).values():
            for operation in path.values():
                _only_possible_input_errors(operation)
                for response in operation.get("responses", {}).values():
                    _problem_schema_where_sent(response.get("content", {}))
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _only_possible_input_errors(operation: dict[str, Any]) -> None:
    responses = operation.get("responses", {})
    shared_400 = (
        responses.get("400", {}).get("description") == PROBLEM_RESPONSES[400]["description"]
    )
    if "requestBody" not in operation:
        if shared_400:
            del responses["400"]
        responses.pop("408", None)
        responses.pop("415", None)
    if "422" in responses and not operation.get("parameters") and "requestBody" not in operation:
        del responses["422"]


def _problem_schema_where_sent(content: dict[str, Any]) -> None:
    if PROBLEM_MEDIA_TYPE not in content:
        return
    content[PROBLEM_MEDIA_TYPE] = {"schema": _PROBLEM_SCHEMA}
    for media_type, entry in list(content.items()):
        if media_type != PROBLEM_MEDIA_TYPE and entry.get("schema") == _PROBLEM_SCHEMA:
            del content[media_type]
