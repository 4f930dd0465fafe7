"""The OpenAPI document: every /v1 operation, the X-API-Key scheme and the role it needs on
each, problem responses; none of it served with ``DOCS_ENABLED=false``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import Settings
from recsys_shared.schemas import ID_PATTERN, PATTERN_RULES, TIMESTAMP_PATTERN
from recsys_shared.testing.documents import objects_in

from .operations import ADMIN, KEYED, SIGN_IN

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _document(gateway: Any) -> dict[str, Any]:
    response = gateway.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _v1_operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        if path.startswith("/v1")
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def test_every_v1_route_is_documented(gateway: Any) -> None:
    assert set(_v1_operations(_document(gateway))) == KEYED | SIGN_IN


def test_the_api_key_scheme_and_its_role_are_required_everywhere(gateway: Any) -> None:
    document = _document(gateway)
    schemes = document["components"]["securitySchemes"]
    [header] = [name for name, scheme in schemes.items() if scheme["in"] == "header"]
    [cookie] = [name for name, scheme in schemes.items() if scheme["in"] == "cookie"]
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"}.items() <= schemes[
        header
    ].items()
    assert schemes[cookie]["name"] == "recsys_status_session"
    operations = _v1_operations(document)
    for key in KEYED - {("get", "/v1/status")}:
        role = "admin" if key in ADMIN else "client"
        assert operations[key].get("security") == [{header: [role]}], key
    # The status page: a viewer (or admin) key in the header, or the session of one.
    assert operations[("get", "/v1/status")]["security"] == [
        {header: ["viewer"]},
        {cookie: ["viewer"]},
    ]
    for key in SIGN_IN:
        assert "security" not in operations[key], key


def test_the_sign_in_form_is_documented(gateway: Any) -> None:
    operations = _v1_operations(_document(gateway))
    sign_in = operations[("post", "/v1/status/login")]
    form = sign_in["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["key"]
    assert {"303", "401", "403", "422"} <= set(sign_in["responses"])
    assert "text/html" in sign_in["responses"]["401"]["content"]
    assert "text/html" in operations[("get", "/v1/status")]["responses"]["200"]["content"]
    assert "400" in operations[("get", "/v1/status")]["responses"]


def test_problem_responses_are_documented(gateway: Any) -> None:
    operations = _v1_operations(_document(gateway))
    for key, operation in operations.items():
        if key in SIGN_IN:
            continue
        responses = operation["responses"]
        assert {"401", "403", "503"} <= set(responses), key
        assert "application/problem+json" in responses["401"]["content"], key
        # Only what can happen: a 422 where there is input, a body's 400 where there is one.
        has_input = bool(operation.get("parameters")) or "requestBody" in operation
        assert ("422" in responses) is has_input, key
        assert ("415" in responses) is ("requestBody" in operation), key  # a body's coding
        assert ("408" in responses) is ("requestBody" in operation), key  # a stalled body
        if "requestBody" not in operation and "400" in responses:
            assert "URL" in responses["400"]["description"], key  # the status page's own
    operations_without_input = [
        key
        for key, operation in operations.items()
        if not operation.get("parameters") and "requestBody" not in operation
    ]
    assert ("get", "/v1/models") in operations_without_input
    for key in [
        ("get", "/v1/items/{item_id}"),
        ("put", "/v1/items/{item_id}"),
        ("patch", "/v1/items/{item_id}"),
        ("get", "/v1/items/{item_id}/similar"),
        ("post", "/v1/models/{version}/activate"),
        ("get", "/v1/tasks/{task_id}"),
    ]:
        assert "404" in operations[key]["responses"], key
    assert "409" in operations[("post", "/v1/models/{version}/activate")]["responses"]


PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}


def test_every_problem_is_documented_as_it_is_sent(gateway: Any) -> None:
    """Problems are sent as application/problem+json: the Problem schema is filed there, and
    under no other media type (FastAPI would put it under the route's own, JSON or HTML)."""
    for key, operation in _v1_operations(_document(gateway)).items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]
            assert content["application/problem+json"] == {"schema": PROBLEM_SCHEMA}, key
            others = {media: entry for media, entry in content.items() if "problem" not in media}
            assert PROBLEM_SCHEMA not in [entry.get("schema") for entry in others.values()], key
    sign_in = _v1_operations(_document(gateway))[("post", "/v1/status/login")]["responses"]
    # A browser's refusals come back as the form; a rate limit or a large body never does.
    assert {s for s, r in sign_in.items() if "text/html" in r.get("content", {})} == {
        "401",
        "403",
        "422",
    }
    assert {"413", "415", "429"} <= set(sign_in)


def test_every_published_pattern_is_explained_in_words_when_it_refuses(gateway: Any) -> None:
    """A refused string's 422 says the rule in words (PATTERN_RULES), not the regex: every
    pattern the document publishes has its words (the timestamp's check has its own)."""
    published = {
        node["pattern"]
        for node in objects_in(_document(gateway))
        if isinstance(node.get("pattern"), str)
    }

    assert ID_PATTERN in published
    assert sorted(published - set(PATTERN_RULES) - {TIMESTAMP_PATTERN}) == []


def test_every_bound_is_stated_in_json_schemas_words(gateway: Any) -> None:
    """pydantic writes a bound it cannot place (one declared after a validator) as "ge" or
    "le", which JSON Schema does not know: a client or fuzzer would not see the bound."""
    document = gateway.client.get("/openapi.json").json()
    unknown = {"ge", "gt", "le", "lt"}

    assert [node for node in objects_in(document) if unknown & node.keys()] == []


def test_exclude_seen_is_documented_only_where_there_is_a_user(gateway: Any) -> None:
    operations = _v1_operations(_document(gateway))

    def query(key: tuple[str, str]) -> set[str]:
        return {p["name"] for p in operations[key]["parameters"] if p["in"] == "query"}

    assert "exclude_seen" in query(("get", "/v1/users/{user_id}/recommendations"))
    assert query(("get", "/v1/items/popular")) == {"k", "offset", "category"}
    assert query(("get", "/v1/items/{item_id}/similar")) == {"k", "offset", "category"}


def test_a_problems_error_entries_are_documented(gateway: Any) -> None:
    # A client reading the contract learns what each entry of ``errors`` holds, and that an
    # entry's ``index`` is a position when present (never null on the wire).
    schemas = _document(gateway)["components"]["schemas"]
    assert schemas["Problem"]["properties"]["errors"]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }
    entry = schemas["FieldError"]
    assert set(entry["properties"]) == {"field", "message", "type", "index"}
    assert set(entry["required"]) == {"field", "message"}
    assert entry["properties"]["index"]["type"] == "integer"


def test_operations_routes_are_public(gateway: Any) -> None:
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    ready = gateway.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"redis": "ok"}}
    assert "recsys_" in gateway.client.get("/metrics").text


DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")


def test_the_documentation_is_served_by_default(gateway: Any) -> None:
    for path in DOCS_PATHS:
        response = gateway.client.get(path)
        assert response.status_code == 200, path
    assert gateway.settings.docs_enabled is True


@pytest.mark.parametrize("path", DOCS_PATHS)
def test_docs_disabled_answers_404_and_the_api_still_works(
    make_gateway: Callable[..., Any], path: str, client_headers: dict[str, str]
) -> None:
    gateway = make_gateway(docs_enabled=False)

    response = gateway.client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "swagger" not in response.text.lower()
    # Only the documentation is gone: the API and the operations routes answer as before.
    assert gateway.client.get("/healthz").status_code == 200
    assert gateway.client.get("/v1/models", headers=client_headers).status_code == 403


def test_docs_enabled_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCS_ENABLED", "false")
    assert Settings().docs_enabled is False
