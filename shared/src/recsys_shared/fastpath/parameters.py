"""Parameters of the hot read routes, validated by the shared models by hand.

FastAPI resolves an endpoint's declared parameters and dependencies on every request: about
200 µs of CPU on the reference machine for the recommendation route (API key, one path and four
query parameters), more than everything else the gateway does to answer from its cache. The hot
routes therefore take only the ``Request`` and call these functions; the same models document
the parameters in the OpenAPI schema (:func:`documented`, passed as ``openapi_extra``), so what
is validated and what is published cannot drift apart. Invalid input raises FastAPI's
``RequestValidationError`` with the locations FastAPI would give (``query.k``), so the 422
problem is the one every other route answers with.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from recsys_shared.schemas import Identifier

Model = TypeVar("Model", bound=BaseModel)

_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
#: Distinct query strings whose validated model is kept (least recently used go first).
QUERY_STRINGS_KEPT = 4096


def path_identifier(request: Request, name: str) -> str:
    """The path parameter ``name``, checked against the shared id rule."""
    value = request.path_params[name]
    try:
        return _IDENTIFIER.validate_python(value)
    except ValidationError as error:
        raise _located(error, ("path", name)) from None


def query_model(request: Request, model: type[Model]) -> Model:
    """The query string as ``model``: its fields by name, the last value of a repeated one,
    unknown names ignored (as FastAPI does). A frozen model is validated once per distinct
    query string (clients repeat a handful of them), and shared."""
    raw: bytes = request.scope["query_string"]
    if model.model_config.get("frozen"):
        return cast(Model, _frozen_query(model, raw))
    return _parsed_query(model, raw)


@functools.lru_cache(maxsize=QUERY_STRINGS_KEPT)
def _frozen_query(model: type[Model], raw: bytes) -> Model:
    return _parsed_query(model, raw)  # an invalid one raises, and is not kept


def _parsed_query(model: type[Model], raw: bytes) -> Model:
    # Parsed as Starlette parses it, without building its multi-dict.
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    wanted = model.model_fields
    try:
        return model.model_validate({name: value for name, value in pairs if name in wanted})
    except ValidationError as error:
        raise _located(error, ("query",)) from None


def json_body(body: bytes, model: type[Model]) -> Model:
    """A JSON request body as ``model``, with FastAPI's error locations (``body.requests.0``)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise _located(error, ("body",)) from None


def _located(error: ValidationError, prefix: tuple[str, ...]) -> RequestValidationError:
    return RequestValidationError(
        [{**entry, "loc": (*prefix, *entry["loc"])} for entry in error.errors(include_url=False)]
    )


def documented(
    *,
    path: dict[str, str] | None = None,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    security_scheme: str | None = None,
    roles: Sequence[str] = (),
    unused: Collection[str] = (),
) -> dict[str, Any]:
    """``openapi_extra`` for a hand-parsed route: its path ids (name → description), the
    fields of its query model but the ``unused`` ones (a shared model's fields this route
    ignores), its JSON body's model, and the security scheme it enforces with the roles it
    needs (OpenAPI 3.1 lets an API key scheme name roles)."""
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {
                **_IDENTIFIER.json_schema(),
                "description": description,
                "title": name.replace("_", " ").title(),
            },
            "description": description,
        }
        for name, description in (path or {}).items()
    ]
    if query is not None:
        properties = query.model_json_schema()["properties"]
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": schema.get("description", ""),
            }
            for name, schema in properties.items()
            if name not in unused
        ]
    extra: dict[str, Any] = {"parameters": parameters} if parameters else {}
    if body is not None:
        schema = _inlined(body.model_json_schema())
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    if security_scheme is not None:
        extra["security"] = [{security_scheme: list(roles)}]
    return extra


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place: in the OpenAPI document a
    ``#/$defs/…`` reference would point at the document's root, where there are none."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
