"""API keys: parsing, roles, 401 on every /v1 route without a valid key, 403 for admin routes."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import ValidationError

from gateway import routes as gateway_routes
from gateway.auth import ApiKeys, Role
from gateway.config import Settings
from gateway.main import create_app
from recsys_shared.settings import DEVELOPMENT_API_KEYS

PROBLEM = "application/problem+json"

# Every /v1 operation, with its path parameters filled in.
V1_ROUTES = {
    ("POST", "/v1/events"),
    ("GET", "/v1/users/x/recommendations"),
    ("GET", "/v1/items/popular"),
    ("GET", "/v1/items/i1/similar"),
    ("PUT", "/v1/items"),
    ("PUT", "/v1/items/i1"),
    ("GET", "/v1/items/i1"),
    ("PATCH", "/v1/items/i1"),
    ("DELETE", "/v1/items/i1"),
    ("DELETE", "/v1/users/x"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/active"),
    ("POST", "/v1/models/retrain"),
    ("POST", "/v1/models/1/activate"),
    ("GET", "/v1/tasks/x"),
    ("GET", "/v1/pipeline"),
    ("GET", "/v1/pipeline/dead-letters"),
    ("POST", "/v1/pipeline/dead-letters/replay"),
    ("GET", "/v1/drift"),
    ("POST", "/v1/drift/check"),
    ("GET", "/v1/status"),
}
ADMIN_ROUTES = {
    ("GET", "/v1/models"),
    ("GET", "/v1/models/active"),
    ("POST", "/v1/models/retrain"),
    ("POST", "/v1/models/1/activate"),
    ("GET", "/v1/tasks/x"),
    ("GET", "/v1/pipeline"),
    ("GET", "/v1/pipeline/dead-letters"),
    ("POST", "/v1/pipeline/dead-letters/replay"),
    ("GET", "/v1/drift"),
    ("POST", "/v1/drift/check"),
    ("DELETE", "/v1/users/x"),
    ("GET", "/v1/status"),
}
TEMPLATE_VALUES = {
    "{user_id}": "x",
    "{item_id}": "i1",
    "{version}": "1",
    "{task_id}": "x",
}


def _fill(path: str) -> str:
    for template, value in TEMPLATE_VALUES.items():
        path = path.replace(template, value)
    return path


# ── ApiKeys ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "spec",
    [
        "",
        " , ,",
        "nocolon",
        ":admin",
        "key:superuser",
        "key:",
        "good:client,bad",
        "good:client,other:root",
    ],
)
def test_bad_api_key_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        ApiKeys(spec)


def test_roles_are_looked_up_by_key() -> None:
    keys = ApiKeys(" ck:client , ak:admin ,with:colon:admin")
    assert keys.role_of("ck") is Role.CLIENT
    assert keys.role_of("ak") is Role.ADMIN
    assert keys.role_of("with:colon") is Role.ADMIN
    assert keys.role_of("unknown") is None
    assert keys.role_of("") is None
    assert keys.role_of(None) is None
    # A role name is not a key, nor is a key's prefix or the whole entry.
    assert keys.role_of("client") is None
    assert keys.role_of("c") is None
    assert keys.role_of("ck:client") is None


def test_a_bad_key_spec_fails_the_app_at_creation(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url, api_keys="just-a-key")
    with pytest.raises(ValueError, match="key:role"):
        create_app(settings)


def test_production_refuses_the_development_keys(redis_url: str) -> None:
    with pytest.raises(ValidationError, match="API_KEYS"):
        Settings(environment="production", redis_url=redis_url, api_keys=DEVELOPMENT_API_KEYS)
    with pytest.raises(ValidationError, match="API_KEYS"):
        Settings(environment="production", redis_url=redis_url)  # the default is the dev keys
    accepted = Settings(environment="production", redis_url=redis_url, api_keys="s3cr3t:admin")
    assert accepted.api_keys.get_secret_value() == "s3cr3t:admin"


# ── over HTTP ────────────────────────────────────────────────────────────────────────────
def test_the_route_list_covers_every_v1_operation(gateway: Any) -> None:
    declared = set()
    for module in pkgutil.iter_modules(gateway_routes.__path__):
        router = importlib.import_module(f"gateway.routes.{module.name}").router
        declared |= {
            (method, _fill(route.path))
            for route in router.routes
            if isinstance(route, APIRoute)
            for method in route.methods
        }
    assert declared == V1_ROUTES
    # ... and the app serves each of them (an unknown path would be a 404, not a 401).
    for method, path in declared:
        assert gateway.client.request(method, path).status_code == 401, (method, path)


@pytest.mark.parametrize("key", [None, "wrong-key", "ck:client", "CK"])
def test_every_v1_route_needs_a_valid_key(gateway: Any, key: str | None) -> None:
    headers = {"X-API-Key": key} if key is not None else {}
    for method, path in sorted(V1_ROUTES):
        response = gateway.client.request(method, path, headers=headers)
        where = f"{method} {path}: {response.text}"
        assert response.status_code == 401, where
        assert response.headers["content-type"] == PROBLEM, where
        body = response.json()
        assert body["status"] == 401, where
        assert body["type"] == "urn:recsys:problem:authentication-required", where
    # Nothing reached the services behind the gateway.
    assert gateway.recommender.requests == []
    assert gateway.feature_store.requests == []


def test_admin_routes_refuse_a_client_key(gateway: Any, client_headers: dict[str, str]) -> None:
    for method, path in sorted(ADMIN_ROUTES):
        response = gateway.client.request(method, path, headers=client_headers)
        where = f"{method} {path}: {response.text}"
        assert response.status_code == 403, where
        assert response.headers["content-type"] == PROBLEM, where
        assert response.json()["type"] == "urn:recsys:problem:permission-denied", where
    assert gateway.feature_store.requests == []


def test_a_client_key_may_use_client_routes(
    gateway: Any, client_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    for headers in (client_headers, admin_headers):
        response = gateway.client.get("/v1/items/popular", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["strategy"] == "popular"


def test_an_admin_key_passes_admin_routes(gateway: Any, admin_headers: dict[str, str]) -> None:
    response = gateway.client.get("/v1/models", headers=admin_headers)
    assert response.status_code == 200
    assert response.json() == []


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(
    make_gateway: Any, client_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    gateway = make_gateway(rate_limit_per_second=3)
    statuses = [
        gateway.client.get("/v1/items/popular", headers=client_headers).status_code
        for _ in range(6)
    ]
    # Within one second (or two, if the loop straddles a boundary) at most 2 x 3 pass.
    assert statuses.count(429) >= 1, statuses
    refused = gateway.client.get("/v1/items/popular", headers=client_headers)
    if refused.status_code == 429:
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["type"] == "urn:recsys:problem:rate-limited"
    # Another key has its own budget.
    assert gateway.client.get("/v1/models", headers=admin_headers).status_code == 200


def test_cors_allows_only_the_configured_origins(make_gateway: Any) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-API-Key",
    }
    closed = make_gateway()
    response = closed.client.options("/v1/items/popular", headers=preflight)
    assert "access-control-allow-origin" not in response.headers

    open_to_one = make_gateway(cors_origins="https://app.example")
    allowed = open_to_one.client.options("/v1/items/popular", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = open_to_one.client.options(
        "/v1/items/popular", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
