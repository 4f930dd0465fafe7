"""Hand-parsed parameters of the hot routes: validated like FastAPI would, documented the same."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from starlette.exceptions import StarletteDeprecationWarning

from recsys_shared import web
from recsys_shared.fastpath.parameters import documented, path_identifier, query_model
from recsys_shared.schemas import (
    MAX_BATCH_LISTS,
    MAX_ID_LENGTH,
    MAX_K,
    RecommendationQuery,
    UserListBatch,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def _app() -> FastAPI:
    app = FastAPI()

    async def readiness(_: Request) -> dict[str, str]:
        return {}

    web.install(app, readiness=readiness)

    @app.get(
        "/users/{user_id}/things",
        openapi_extra=documented(
            path={"user_id": "User id"}, query=RecommendationQuery, security_scheme="Key"
        ),
    )
    async def things(request: Request) -> dict[str, Any]:
        user_id = path_identifier(request, "user_id")
        return {"user_id": user_id, **query_model(request, RecommendationQuery).model_dump()}

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(_app()) as test_client:
        yield test_client


def test_defaults_apply_and_given_values_are_coerced(client: TestClient) -> None:
    body = client.get("/users/u1/things", params={"k": "5", "exclude_seen": "false"}).json()

    assert body == {"user_id": "u1", **RecommendationQuery(k=5, exclude_seen=False).model_dump()}


def test_the_last_of_a_repeated_parameter_wins_and_unknown_ones_are_ignored(
    client: TestClient,
) -> None:
    body = client.get("/users/u1/things?k=3&k=4&colour=red").json()

    assert body["k"] == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("k=0", "query.k"),
        (f"k={MAX_K + 1}", "query.k"),
        ("k=ten", "query.k"),
        ("k=", "query.k"),
        ("offset=-1", "query.offset"),
        ("exclude_seen=maybe", "query.exclude_seen"),
        ("category=%20Drama", "query.category"),
    ],
)
def test_invalid_query_values_are_a_422_naming_the_field(
    client: TestClient, query: str, field: str
) -> None:
    response = client.get(f"/users/u1/things?{query}")

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_every_invalid_field_is_listed(client: TestClient) -> None:
    response = client.get("/users/u1/things?k=0&offset=5000")

    assert sorted(error["field"] for error in response.json()["errors"]) == [
        "query.k",
        "query.offset",
    ]


@pytest.mark.parametrize("user_id", ["a%20b", "x" * (MAX_ID_LENGTH + 1), "tab%09", "caf%E9"])
def test_an_invalid_path_id_is_a_422_naming_it(client: TestClient, user_id: str) -> None:
    response = client.get(f"/users/{user_id}/things")

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["path.user_id"]


def test_a_path_id_of_bytes_that_are_not_utf8_is_refused_not_read_as_u_fffd(
    client: TestClient,
) -> None:
    # Starlette decodes %E9 (Latin-1 "é") to U+FFFD, as it would %E8: two ids would be one.
    response = client.get("/users/caf%E9/things")

    [error] = response.json()["errors"]
    assert error["message"].startswith("has '\ufffd' (U+FFFD) at character 3 (an id has")


def test_the_document_lists_what_is_validated(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/users/{user_id}/things"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}

    assert set(parameters) == {"user_id", *RecommendationQuery.model_fields}
    assert parameters["user_id"]["in"] == "path"
    assert parameters["user_id"]["required"] is True
    assert parameters["user_id"]["schema"]["maxLength"] == MAX_ID_LENGTH
    k = parameters["k"]
    assert (k["in"], k["required"]) == ("query", False)
    assert (k["schema"]["minimum"], k["schema"]["maximum"], k["schema"]["default"]) == (
        1,
        MAX_K,
        10,
    )
    assert k["description"] == RecommendationQuery.model_fields["k"].description
    assert operation["security"] == [{"Key": []}]


def test_a_body_is_documented_with_its_nested_models_written_in_place() -> None:
    extra = documented(body=UserListBatch)

    schema = extra["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(schema)  # '#/$defs/…' would not resolve in the document
    asked = schema["properties"]["requests"]
    assert asked["maxItems"] == MAX_BATCH_LISTS
    assert set(asked["items"]["properties"]) == {
        "user_id",
        "arm",
        *RecommendationQuery.model_fields,
    }
    assert asked["items"]["required"] == ["user_id"]
    assert "parameters" not in extra
