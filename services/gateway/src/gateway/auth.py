"""API keys with roles, kept only as hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader

from gateway.rate_limit import RateLimiter
from recsys_shared.errors import AuthenticationRequired, PermissionDenied


class Role(StrEnum):
    CLIENT = "client"
    ADMIN = "admin"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Parsed from ``key:role,key:role``; the plain keys are not kept."""

    def __init__(self, spec: str) -> None:
        self._hashes: list[tuple[bytes, Role]] = []
        for entry in filter(None, (part.strip() for part in spec.split(","))):
            key, separator, role = entry.rpartition(":")
            if not separator or not key:
                raise ValueError("API_KEYS entries must look like key:role")
            try:
                self._hashes.append((_digest(key), Role(role)))
            except ValueError as error:
                raise ValueError(f"API_KEYS role '{role}' is not one of client, admin") from error
        if not self._hashes:
            raise ValueError("API_KEYS holds no key")

    def role_of(self, key: str | None) -> Role | None:
        identified = self.identify(key)
        return identified[0] if identified else None

    def identify(self, key: str | None) -> tuple[Role, str] | None:
        """The key's role and a short, non-secret name for it (for rate limits and logs)."""
        if not key:
            return None
        candidate = _digest(key)
        found: tuple[Role, str] | None = None
        # Every stored hash is compared, so timing does not tell which (or whether) one matched.
        for digest, role in self._hashes:
            if hmac.compare_digest(candidate, digest):
                found = (role, digest.hex()[:16])
        return found


API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your API key")
#: The name the OpenAPI document gives the scheme, for routes that check keys by hand.
SECURITY_SCHEME = _api_key_header.scheme_name


async def authorize(request: Request, key: str | None, *, required: Role = Role.CLIENT) -> Role:
    """The key's role, once it is known, allowed ``required`` and within its rate limit.
    Admins may do what clients do."""
    keys: ApiKeys = request.state.api_keys
    identified = keys.identify(key)
    if identified is None:
        raise AuthenticationRequired(
            "A valid API key is required in the X-API-Key header."
            if key is None
            else "The API key is not valid."
        )
    role, key_id = identified
    if required is Role.ADMIN and role is not Role.ADMIN:
        raise PermissionDenied("This operation needs an API key with the admin role.")
    limiter: RateLimiter = request.state.rate_limiter
    await limiter.check(key_id)
    return role


async def authorize_client(request: Request) -> Role:
    """:func:`authorize` for the hand-parsed hot routes, with the key from its header."""
    return await authorize(request, request.headers.get(API_KEY_HEADER))


async def require_client(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Role:
    return await authorize(request, key)


async def require_admin(
    request: Request, key: Annotated[str | None, Depends(_api_key_header)]
) -> Role:
    return await authorize(request, key, required=Role.ADMIN)


async def require_admin_in_browser(
    request: Request,
    header: Annotated[str | None, Depends(_api_key_header)],
    key: Annotated[
        str | None,
        Query(
            description="The API key, for a page opened in a browser (which sends no "
            "X-API-Key header on navigation); the header wins when both are given."
        ),
    ] = None,
) -> Role:
    """Admin, with the key in the X-API-Key header or in ``?key=``: only for pages a person
    opens in a browser (GET /v1/status), never for the API, where a key in a URL would end up
    in histories and proxy logs. The same keys, hashes, roles and rate limit apply."""
    return await authorize(request, header if header is not None else key, required=Role.ADMIN)


ClientAuth = Depends(require_client)
AdminAuth = Depends(require_admin)
BrowserAdminAuth = Depends(require_admin_in_browser)
