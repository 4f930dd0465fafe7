"""API keys: parsing, roles, production's rules for keys and the session secret, 401 on every
/v1 route without a valid key, 403 for a role that may not (admin routes for a client key,
every API route for a viewer key)."""

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
from recsys_shared import keys
from recsys_shared.settings import DEVELOPMENT_API_KEYS

from .operations import ADMIN, KEYED, SIGN_IN, fill, requests

VIEWER_KEY = "vk"
STRONG_CLIENT = "Q2xpZW50LWtleS1mb3ItcHJvZHVjdGlvbg"  # 34 characters
STRONG_ADMIN = "QWRtaW4ta2V5LWZvci1wcm9kdWN0aW9uLQ"
STRONG_SESSION = "c2Vzc2lvbi1zZWNyZXQtZm9yLXByb2R1Y3Rpb24"

PROBLEM = "application/problem+json"

# Every /v1 operation as a request, with its path parameters filled in.
V1_ROUTES = requests(KEYED)
SIGN_IN_ROUTES = requests(SIGN_IN)
ADMIN_ROUTES = requests(ADMIN)


# ── ApiKeys ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "spec",
    [
        "",
        " , ,",
        "nocolon",
        ":admin",
        "key:superuser",
        "key:Viewer",
        "key:",
        "good:client,bad",
        "good:client,other:root",
    ],
)
def test_bad_api_key_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        ApiKeys(spec)


def test_roles_are_looked_up_by_key() -> None:
    keys = ApiKeys(" ck:client , ak:admin ,with:colon:admin, vk:viewer")
    assert keys.role_of("ck") is Role.CLIENT
    assert keys.role_of("ak") is Role.ADMIN
    assert keys.role_of("vk") is Role.VIEWER
    assert keys.role_of("with:colon") is Role.ADMIN
    assert keys.role_of("unknown") is None
    assert keys.role_of("") is None
    assert keys.role_of(None) is None
    # A role name is not a key, nor is a key's prefix or the whole entry.
    assert keys.role_of("client") is None
    assert keys.role_of("c") is None
    assert keys.role_of("ck:client") is None


def test_a_key_is_found_again_by_its_id_until_it_is_removed() -> None:
    keys = ApiKeys("ck:client,vk:viewer")
    identified = keys.identify("vk")
    assert identified is not None
    role, key_id = identified
    assert (role, len(key_id)) == (Role.VIEWER, 16)
    assert "vk" not in key_id
    assert keys.role_of_id(key_id) is Role.VIEWER
    assert ApiKeys("ck:client").role_of_id(key_id) is None
    assert ApiKeys("vk:client").role_of_id(key_id) is Role.CLIENT


@pytest.mark.parametrize(
    ("role", "required", "allowed"),
    [
        (Role.CLIENT, Role.CLIENT, True),
        (Role.CLIENT, Role.ADMIN, False),
        (Role.CLIENT, Role.VIEWER, False),
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.CLIENT, False),
        (Role.VIEWER, Role.ADMIN, False),
        (Role.ADMIN, Role.CLIENT, True),
        (Role.ADMIN, Role.VIEWER, True),
        (Role.ADMIN, Role.ADMIN, True),
    ],
)
def test_admins_may_do_what_the_other_roles_may(role: Role, required: Role, allowed: bool) -> None:
    assert role.may(required) is allowed


def test_a_bad_key_spec_fails_the_settings_naming_the_rule(redis_url: str) -> None:
    with pytest.raises(ValidationError, match="key:role"):
        Settings(redis_url=redis_url, api_keys="just-a-key")
    with pytest.raises(ValidationError, match="'root' is not one of client, admin, viewer"):
        Settings(redis_url=redis_url, api_keys="k:root")


# ── production's rules ────────────────────────────────────────────────────────────────────
def _production(**values: Any) -> Settings:
    return Settings(
        _env_file=None,
        environment="production",
        **{
            "api_keys": f"{STRONG_CLIENT}:client,{STRONG_ADMIN}:admin",
            "session_secret": STRONG_SESSION,
            **values,
        },
    )


def test_production_refuses_the_development_keys() -> None:
    with pytest.raises(ValidationError, match=r"'API_KEYS' .*development placeholder"):
        _production(api_keys=DEVELOPMENT_API_KEYS)
    with pytest.raises(ValidationError, match=r"'API_KEYS' .*development placeholder"):
        Settings(_env_file=None, environment="production", session_secret=STRONG_SESSION)


def test_production_refuses_a_short_key_naming_the_setting_the_key_and_the_rule() -> None:
    with pytest.raises(ValidationError) as raised:
        _production(api_keys=f"{STRONG_CLIENT}:client,s3cr3t:admin")

    message = str(raised.value)
    assert (
        "Setting 'API_KEYS' (key 2 of 2, role admin) is 6 characters long; "
        "production needs at least 32" in message
    )
    assert "s3cr3t" not in message
    assert "key 1" not in message  # the strong one is not complained about


def test_production_accepts_keys_of_32_characters_and_more() -> None:
    settings = _production(api_keys=f"{'k' * 31}x:viewer,{STRONG_ADMIN}:admin")
    assert ApiKeys(settings.api_keys.get_secret_value()).role_of("k" * 31 + "x") is Role.VIEWER


@pytest.mark.parametrize(
    ("secret", "complaint"),
    [
        (None, "'SESSION_SECRET' is not set"),
        ("", "'SESSION_SECRET' is not set"),
        ("changeme", "'SESSION_SECRET' holds a development placeholder"),
        ("dev-session-secret-0123456789abcdef", "'SESSION_SECRET' holds a development"),
        ("short-but-random-Zq9", "'SESSION_SECRET' is 20 characters long"),
    ],
)
def test_production_needs_a_real_session_secret(secret: str | None, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        _production(session_secret=secret)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_keep_the_documented_keys_and_generate_a_session_secret(
    environment: str,
) -> None:
    settings = Settings(_env_file=None, environment=environment)
    other = Settings(_env_file=None, environment=environment)

    keys = ApiKeys(settings.api_keys.get_secret_value())
    assert keys.role_of("dev-client-key") is Role.CLIENT
    assert keys.role_of("dev-admin-key") is Role.ADMIN
    # Generated once per process's settings: stable for it, different for another.
    assert len(settings.session_key) == 32
    assert settings.session_key == settings.session_key
    assert settings.session_key != other.session_key
    empty = Settings(_env_file=None, environment=environment, session_secret="")
    assert empty.session_secret is None
    assert len(empty.session_key) == 32
    configured = Settings(_env_file=None, session_secret="x" * 40)
    assert configured.session_key == b"x" * 40


# ── over HTTP ────────────────────────────────────────────────────────────────────────────
def test_the_route_list_covers_every_v1_operation(gateway: Any) -> None:
    declared = set()
    for module in pkgutil.iter_modules(gateway_routes.__path__):
        router = importlib.import_module(f"gateway.routes.{module.name}").router
        declared |= {
            (method, fill(route.path_format))
            for route in router.routes
            if isinstance(route, APIRoute)
            for method in route.methods
        }
    assert declared == V1_ROUTES | SIGN_IN_ROUTES
    # ... and the app serves each of them (an unknown path would be a 404, not a 401).
    for method, path in V1_ROUTES:
        assert gateway.client.request(method, path).status_code == 401, (method, path)


def _sent(
    gateway: Any, method: str, path: str, headers: dict[str, str], broken: bytes | None
) -> Any:
    """The request, with a ``broken`` body that is not even JSON if one is given: FastAPI
    refuses such a body before the route's dependencies (its key check) run."""
    if broken is None:
        return gateway.client.request(method, path, headers=headers)
    json_headers = {**headers, "content-type": "application/json"}
    return gateway.client.request(method, path, headers=json_headers, content=broken)


#: No body; one the JSON decoder refuses; one it cannot even decode (FastAPI's bare 400).
BROKEN_BODIES = pytest.mark.parametrize(
    "broken",
    [None, b"{not json", b'{"events": "caf\xe9"}'],
    ids=["no-body", "broken-json", "not-utf-8"],
)


@BROKEN_BODIES
@pytest.mark.parametrize("key", [None, "wrong-key", "ck:client", "CK"])
def test_every_v1_route_needs_a_valid_key(
    gateway: Any, store: Any, key: str | None, broken: bytes | None
) -> None:
    headers = {"X-API-Key": key} if key is not None else {}
    for method, path in sorted(V1_ROUTES):
        response = _sent(gateway, method, path, headers, broken)
        where = f"{method} {path}: {response.text}"
        assert response.status_code == 401, where
        assert response.headers["content-type"] == PROBLEM, where
        body = response.json()
        assert body["status"] == 401, where
        assert body["type"] == "urn:recsys:problem:authentication-required", where
        assert response.headers["www-authenticate"] == "APIKey", where  # RFC 9110: a challenge
    # Nothing reached the services behind the gateway, nor was counted as a refused event.
    assert gateway.recommender.requests == []
    assert gateway.feature_store.requests == []
    assert store.get(keys.PIPELINE_REJECTED) is None


@BROKEN_BODIES
def test_admin_routes_refuse_a_client_key(
    gateway: Any, client_headers: dict[str, str], broken: bytes | None
) -> None:
    for method, path in sorted(ADMIN_ROUTES):
        response = _sent(gateway, method, path, client_headers, broken)
        where = f"{method} {path}: {response.text}"
        assert response.status_code == 403, where
        assert response.headers["content-type"] == PROBLEM, where
        assert response.json()["type"] == "urn:recsys:problem:permission-denied", where
    assert gateway.feature_store.requests == []


@pytest.fixture
def with_viewer(make_gateway: Any) -> Any:
    return make_gateway(api_keys=f"ck:client,ak:admin,{VIEWER_KEY}:viewer")


def test_a_viewer_key_may_open_the_status_page_and_nothing_else(with_viewer: Any) -> None:
    headers = {"X-API-Key": VIEWER_KEY}
    for method, path in sorted(V1_ROUTES - {("GET", "/v1/status")}):
        response = with_viewer.client.request(method, path, headers=headers)
        where = f"{method} {path}: {response.text}"
        assert response.status_code == 403, where
        assert response.headers["content-type"] == PROBLEM, where
        body = response.json()
        assert body["type"] == "urn:recsys:problem:permission-denied", where
        assert "this key's role is 'viewer'" in body["detail"], where
    assert with_viewer.recommender.requests == []
    assert with_viewer.feature_store.requests == []

    page = with_viewer.client.get("/v1/status", headers=headers)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")


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
