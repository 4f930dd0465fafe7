"""The status page's sign-in session: a signed, expiring cookie that names a key, not the key.

A browser sends no ``X-API-Key`` header when a person navigates to a page, and a key in the
URL would reach proxies' logs, traces and the browser's history. So a person signs in once
with the key in a form body and gets a cookie::

    <version>.<key id>.<expiry, unix seconds>.<HMAC-SHA256 of the first three, base64url>

signed with SESSION_SECRET. The key id is the one rate limits use (16 hex digits of the key's
SHA-256): each request looks its role up among the configured keys again, so a key removed
from API_KEYS loses its sessions at the next request, and a changed role applies at once.
Sessions are stateless: signing out deletes the cookie in that browser; a copied cookie stays
valid until it expires, its key is removed or SESSION_SECRET changes.

Python's ``hmac`` is the whole mechanism (a dependency such as itsdangerous would add a
package for these few lines); the cookie's attributes are Starlette's ``set_cookie``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from recsys_shared.settings import Environment

COOKIE_NAME = "recsys_status_session"
#: The cookie goes back to the status page's routes only, never to the API.
COOKIE_PATH = "/v1/status"
_VERSION = "1"
_KEY_ID_LENGTH = 16


@dataclass(frozen=True)
class Sessions:
    """Issues and checks session tokens under one secret."""

    secret: bytes
    max_age_seconds: int

    def issue(self, key_id: str, *, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.max_age_seconds
        signed = f"{_VERSION}.{key_id}.{expires}"
        return f"{signed}.{self._signature(signed)}"

    def key_id(self, token: str, *, now: float | None = None) -> str | None:
        """The key id a token names, or None if it is malformed, tampered with or expired."""
        parts = token.split(".")
        if len(parts) != 4:
            return None
        version, key_id, expires, signature = parts
        signed = f"{version}.{key_id}.{expires}"
        # As bytes: a str with a character beyond ASCII (a cookie may hold any) would make
        # compare_digest raise instead of answer.
        expected = self._signature(signed).encode()
        if not hmac.compare_digest(signature.encode("utf-8", "surrogateescape"), expected):
            return None
        if version != _VERSION or len(key_id) != _KEY_ID_LENGTH or not expires.isdigit():
            return None
        remaining = int(expires) - (now if now is not None else time.time())
        # A lifetime beyond today's maximum was issued under a longer setting: ended with it.
        if not 0 < remaining <= self.max_age_seconds:
            return None
        return key_id

    def _signature(self, signed: str) -> str:
        digest = hmac.new(self.secret, signed.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def cookie_is_secure(request: Request, environment: Environment) -> bool:
    """``Secure``, except over plain http on a loopback host or outside production, where a
    browser would drop a Secure cookie and the sign-in would loop."""
    if request.url.scheme == "https":
        return True
    return environment is Environment.PRODUCTION and not _is_loopback(request.url.hostname)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def set_session_cookie(response: Response, token: str, *, max_age: int, secure: bool) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(
        COOKIE_NAME, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict"
    )


def from_this_site(request: Request) -> bool:
    """Whether a form POST was sent by a page of this gateway, not forged by another site:
    the browser's ``Sec-Fetch-Site`` says ``same-origin``, or, from a browser that sends no
    such header, its ``Origin`` names this host. A request with neither is refused: browsers
    send one of them on every form POST, and scripts authenticate with the header instead."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if not origin or origin == "null" or not host:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "http://[::1": no origin a browser sends, so not this site
        return False
    return netloc.lower() == host.lower()
