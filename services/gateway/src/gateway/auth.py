"""API keys with roles, kept only as hashes and found by the hash of the key presented.

Three roles: ``client`` (the API an application calls), ``admin`` (also users, models, tasks,
pipeline, drift) and ``viewer`` (the status page and nothing else). An admin may do what
the other two may. The OpenAPI document names the role each operation needs in its
security requirement (OpenAPI 3.1 allows role names there for API key schemes).
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from gateway.deps import GatewayState
from recsys_shared.errors import AuthenticationRequired, PermissionDenied
from recsys_shared.web.state import lifespan_state


class Role(StrEnum):
    CLIENT = "client"
    ADMIN = "admin"
    VIEWER = "viewer"

    def may(self, required: Role) -> bool:
        """Whether a key of this role may do what ``required`` may: admins may do anything."""
        return self is required or self is Role.ADMIN


_NEEDS = {
    Role.CLIENT: "This operation needs an API key with the client or admin role",
    Role.ADMIN: "This operation needs an API key with the admin role",
    Role.VIEWER: "The status page needs an API key with the viewer or admin role",
}


def parse_api_keys(spec: str) -> list[tuple[str, Role]]:
    """``key:role,key:role`` as (key, role) pairs; a key may itself hold a colon."""
    parsed: list[tuple[str, Role]] = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        key, separator, role = entry.rpartition(":")
        if not separator or not key:
            raise ValueError("API_KEYS entries must look like key:role")
        try:
            parsed.append((key, Role(role)))
        except ValueError as error:
            roles = ", ".join(Role)
            raise ValueError(f"API_KEYS role '{role}' is not one of {roles}") from error
    if not parsed:
        raise ValueError("API_KEYS holds no key")
    return parsed


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Parsed from ``key:role,key:role``; the plain keys are not kept.

    A key is known by its *id*, the first 16 hex digits of its SHA-256: rate limits, logs and
    the status page's sessions name a key by it, never by the key itself."""

    def __init__(self, spec: str) -> None:
        digests = [(_digest(key), role) for key, role in parse_api_keys(spec)]
        self._by_digest = {digest: (role, digest.hex()[:16]) for digest, role in digests}
        self._roles_by_id = {key_id: role for role, key_id in self._by_digest.values()}

    def role_of(self, key: str | None) -> Role | None:
        identified = self.identify(key)
        return identified[0] if identified else None

    def identify(self, key: str | None) -> tuple[Role, str] | None:
        """The key's role and its id."""
        if not key:
            return None
        # Looked up by the SHA-256 of the key, not the key: how long a lookup takes tells an
        # attacker only about digests, which they cannot steer towards a stored one. One dict
        # lookup, where comparing every stored hash cost each request a loop over the keys.
        return self._by_digest.get(_digest(key))

    def role_of_id(self, key_id: str) -> Role | None:
        """The role of the key with this id, or None once the key is no longer configured."""
        return self._roles_by_id.get(key_id)


API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your API key")
#: The name the OpenAPI document gives the scheme, for routes that check keys by hand.
SECURITY_SCHEME = api_key_header.scheme_name


async def authorize(request: Request, key: str | None, *, required: Role = Role.CLIENT) -> Role:
    """The key's role, once it is known, allowed ``required`` and within its rate limit."""
    identified = lifespan_state(request, GatewayState).api_keys.identify(key)
    if identified is None:
        raise AuthenticationRequired(
            "A valid API key is required in the X-API-Key header."
            if key is None
            else "The API key is not valid."
        )
    role, key_id = identified
    return await admit(request, role, key_id, required=required)


async def admit(request: Request, role: Role, key_id: str, *, required: Role) -> Role:
    """``role`` if it may do what ``required`` may, counted against the key's rate limit."""
    if not role.may(required):
        raise PermissionDenied(f"{_NEEDS[required]}; this key's role is '{role}'.")
    await lifespan_state(request, GatewayState).rate_limiter.check(key_id)
    return role


async def authorize_client(request: Request) -> Role:
    """:func:`authorize` for the hand-parsed hot routes, with the key from its header."""
    return await authorize(request, request.headers.get(API_KEY_HEADER))


async def require_client(
    request: Request, key: Annotated[str | None, Depends(api_key_header)]
) -> Role:
    return await authorize(request, key)


async def require_admin(
    request: Request, key: Annotated[str | None, Depends(api_key_header)]
) -> Role:
    return await authorize(request, key, required=Role.ADMIN)


#: The roles named in the OpenAPI security requirement of a hand-parsed client route.
CLIENT_ROLES = (Role.CLIENT.value,)
ClientAuth = Security(require_client, scopes=list(CLIENT_ROLES))
AdminAuth = Security(require_admin, scopes=[Role.ADMIN.value])


async def authorize_route(request: Request) -> None:
    """The key check of the route ``request`` matched, run by hand: FastAPI refuses a body
    that is not even JSON before the route's dependencies run, and without this its 422 would
    answer a caller with no key, or the wrong role, as if they might use the route."""
    route = request.scope.get("route")
    dependencies = route.dependencies if isinstance(route, APIRoute) else []
    if AdminAuth in dependencies:
        await require_admin(request, request.headers.get(API_KEY_HEADER))
    elif ClientAuth in dependencies:
        await authorize_client(request)
