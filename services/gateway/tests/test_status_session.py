"""Signing in to the status page: the form, the session cookie (valid, tampered, expired, of a
revoked key, shared by replicas), the same-origin check, signing out, and where the cookie is
``Secure``. Every gateway here is the real app on a real Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from http.cookies import SimpleCookie
from typing import Any

import pytest
from starlette.requests import Request

from gateway.status_page.session import (
    COOKIE_NAME,
    Sessions,
    cookie_is_secure,
    from_this_site,
)
from recsys_shared.settings import Environment
from recsys_shared.testing import assert_problem

SECRET = "a-session-secret-shared-by-every-replica-0123"
KEYS = "ck:client,ak:admin,vk:viewer"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
KEY_ID = hashlib.sha256(b"vk").hexdigest()[:16]


@pytest.fixture
def start(make_gateway: Any) -> Any:
    def started(**overrides: Any) -> Any:
        return make_gateway(**{"api_keys": KEYS, "session_secret": SECRET, **overrides})

    return started


@pytest.fixture
def gateway(start: Any) -> Any:
    return start()


def _sign_in(gateway: Any, key: str = "vk", *, same_site: bool = True, **headers: str) -> Any:
    """Post the sign-in form, as a browser on this site does (``Sec-Fetch-Site``) unless
    ``same_site`` is false: then only the ``headers`` given, as an older browser sends."""
    return gateway.client.post(
        "/v1/status/login",
        data={"key": key},
        headers={**(SAME_ORIGIN if same_site else {}), **headers},
        follow_redirects=False,
    )


def _cookie(response: Any) -> Any:
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie[COOKIE_NAME]


def _page(gateway: Any, token: str | None = None, **headers: str) -> Any:
    return _get(gateway, "/v1/status", token, **headers)


def _get(gateway: Any, path: str, token: str | None, **headers: str) -> Any:
    """GET with exactly this session (the client's own cookie jar is emptied first)."""
    gateway.client.cookies.clear()
    if token is not None:
        headers["Cookie"] = f"{COOKIE_NAME}={token}"
    return gateway.client.get(path, headers=headers, follow_redirects=False)


# ── the flow ──────────────────────────────────────────────────────────────────────────────
def test_the_sign_in_form_posts_the_key_in_its_body(gateway: Any) -> None:
    response = gateway.client.get("/v1/status/login")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "form-action 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert '<form class="signin" method="post" action="/v1/status/login"' in html
    assert '<input id="key" name="key" type="password"' in html
    assert "<script" not in html


def test_a_browser_without_a_session_is_sent_to_the_form(gateway: Any) -> None:
    response = _page(gateway, **BROWSER)

    assert response.status_code == 303
    assert response.headers["location"] == "/v1/status/login"
    # A wrong key in the header is a script's mistake: a 401, not a sign-in form.
    wrong = _page(gateway, **BROWSER, **{"X-API-Key": "wrong"})
    assert_problem(wrong, 401)


def test_signing_in_sets_a_session_cookie_that_opens_the_page(gateway: Any) -> None:
    response = _sign_in(gateway)

    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/v1/status"
    cookie = _cookie(response)
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "strict"
    assert cookie["path"] == "/v1/status"
    assert cookie["max-age"] == str(8 * 3600)
    assert not cookie["secure"]  # plain http in the test environment
    # The session names the key's id, never the key.
    # Version, key id, expiry and an HMAC of them: nothing else travels (a search for "vk" in
    # the whole token would match the signature's random base64 about once in a hundred).
    token = cookie.value
    version, key_id, expires, _signature = token.split(".")
    assert key_id == KEY_ID
    assert expires.isdigit()
    assert "vk" not in version + expires

    page = _page(gateway, token, **BROWSER)
    assert page.status_code == 200, page.text
    assert 'data-testid="table-models"' in page.text
    assert '<form method="post" action="/v1/status/logout">' in page.text
    # Signed in already: the form sends the browser on to the page.
    again = _get(gateway, "/v1/status/login", token)
    assert (again.status_code, again.headers["location"]) == (303, "/v1/status")


def test_an_admin_key_signs_in_and_a_client_key_does_not(gateway: Any) -> None:
    assert _sign_in(gateway, "ak").status_code == 303
    refused = _sign_in(gateway, "ck")
    assert_problem(refused, 403)
    assert "viewer or admin role" in refused.json()["detail"]
    assert "set-cookie" not in refused.headers


def test_a_wrong_key_shows_the_form_again_to_a_browser_and_a_problem_to_others(
    gateway: Any,
) -> None:
    in_browser = _sign_in(gateway, "nope", **BROWSER)
    assert in_browser.status_code == 401
    assert in_browser.headers["content-type"].startswith("text/html")
    assert 'data-testid="sign-in-error"' in in_browser.text
    assert "The API key is not valid." in in_browser.text
    assert "set-cookie" not in in_browser.headers

    scripted = _sign_in(gateway, "nope")
    assert scripted.status_code == 401
    assert scripted.json()["type"] == "urn:recsys:problem:authentication-required"
    for refused in (in_browser, scripted):  # RFC 9110: a 401 names a challenge
        assert refused.headers["www-authenticate"] == "APIKey"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/x-www-form-urlencoded"),
        (b"other=1", "application/x-www-form-urlencoded"),
        (b"key=", "application/x-www-form-urlencoded"),
        (b"key=" + b"k" * 1025, "application/x-www-form-urlencoded"),
        (b'{"key": "vk"}', "application/json"),
        (b"&" * 100, "application/x-www-form-urlencoded"),
    ],
)
def test_a_form_without_a_usable_key_is_a_422(gateway: Any, body: bytes, content_type: str) -> None:
    response = gateway.client.post(
        "/v1/status/login",
        content=body,
        headers={**SAME_ORIGIN, "Content-Type": content_type},
        follow_redirects=False,
    )

    assert_problem(response, 422)
    assert response.json()["errors"][0]["field"] == "key"


def test_signing_out_deletes_the_cookie(gateway: Any) -> None:
    token = _cookie(_sign_in(gateway)).value

    gateway.client.cookies.clear()
    response = gateway.client.post(
        "/v1/status/logout",
        headers={**SAME_ORIGIN, "Cookie": f"{COOKIE_NAME}={token}"},
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/v1/status/login"
    cleared = _cookie(response)
    assert cleared["max-age"] == "0"
    assert cleared["path"] == "/v1/status"
    assert cleared.value == ""


# ── the same-origin check ─────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://[::1"},  # no URL at all (urlsplit raises)
        {"Origin": "http://[zz]"},
    ],
)
@pytest.mark.parametrize("path", ["/v1/status/login", "/v1/status/logout"])
def test_a_form_post_from_elsewhere_is_refused(
    gateway: Any, path: str, headers: dict[str, str]
) -> None:
    response = gateway.client.post(
        path, data={"key": "vk"}, headers=headers, follow_redirects=False
    )

    assert_problem(response, 403)
    assert "own" in response.json()["detail"]
    assert "set-cookie" not in response.headers


def test_an_origin_naming_this_host_is_accepted_without_sec_fetch_site(gateway: Any) -> None:
    response = _sign_in(gateway, same_site=False, Origin="http://testserver")
    assert response.status_code == 303


def _request(url: str, headers: dict[str, str] | None = None) -> Request:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    raw = [(b"host", host.encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return Request({"type": "http", "scheme": scheme, "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Origin": "https://Status.Example.com"}, True),
        ({"Origin": "https://status.example.com:8443"}, False),
        ({"Origin": "https://example.com"}, False),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, True),
        ({"Sec-Fetch-Site": "none"}, False),
    ],
)
def test_from_this_site_compares_the_origin_with_the_host(
    headers: dict[str, str], expected: bool
) -> None:
    assert from_this_site(_request("https://status.example.com/", headers)) is expected


# ── Secure ────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("url", "environment", "secure"),
    [
        ("https://status.example.com/", Environment.PRODUCTION, True),
        ("https://127.0.0.1:8000/", Environment.DEVELOPMENT, True),
        ("http://status.example.com/", Environment.PRODUCTION, True),  # behind a TLS proxy
        ("http://127.0.0.1:8000/", Environment.PRODUCTION, False),
        ("http://localhost:8000/", Environment.PRODUCTION, False),
        ("http://[::1]:8000/", Environment.PRODUCTION, False),
        ("http://10.0.0.5:8000/", Environment.PRODUCTION, True),
        ("http://10.0.0.5:8000/", Environment.DEVELOPMENT, False),
        ("http://testserver/", Environment.TEST, False),
    ],
)
def test_the_cookie_is_secure_except_over_http_on_loopback_or_in_development(
    url: str, environment: Environment, secure: bool
) -> None:
    assert cookie_is_secure(_request(url), environment) is secure


def test_production_over_https_sets_a_secure_cookie(start: Any) -> None:
    strong = "viewer-key-for-production-0123456789"
    gateway = start(
        environment="production",
        api_keys=f"{strong}:viewer,{'a' * 40}:admin",
        session_secret=SECRET,
    )

    response = gateway.client.post(
        "https://testserver/v1/status/login",
        data={"key": strong},
        headers={"Origin": "https://testserver"},
        follow_redirects=False,
    )

    assert response.status_code == 303, response.text
    assert _cookie(response)["secure"] is True


# ── the session itself ────────────────────────────────────────────────────────────────────
def test_a_tampered_session_is_refused(gateway: Any) -> None:
    token = _cookie(_sign_in(gateway)).value
    version, key_id, expires, signature = token.split(".")
    admin_id = hashlib.sha256(b"ak").hexdigest()[:16]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    forged = [
        f"{version}.{admin_id}.{expires}.{signature}",  # another key's id
        f"{version}.{key_id}.{int(expires) + 3600}.{signature}",  # a later expiry
        f"{version}.{key_id}.{expires}.{flipped}",
        f"2.{key_id}.{expires}.{signature}",
        f"{version}.{key_id}.{expires}",
        "not-a-session",
    ]
    for bad in forged:
        refused = _page(gateway, bad)
        assert refused.status_code == 401, bad
        assert "session has expired, was altered" in refused.json()["detail"]
    assert _page(gateway, token).status_code == 200  # the original still works


@pytest.mark.parametrize("signature", ["\u00e9", "sig\u00e9nature", "\udce9"])
def test_a_signature_beyond_ascii_is_refused_not_an_error(signature: str) -> None:
    sessions = Sessions(b"a-secret-long-enough-for-the-test-suite", 3600)
    _, key_id, expires, _ = sessions.issue(KEY_ID).split(".")
    assert sessions.key_id(f"1.{key_id}.{expires}.{signature}") is None


def test_a_cookie_quoting_a_character_beyond_ascii_is_refused(gateway: Any) -> None:
    # Starlette reads a quoted cookie's octal escape as the character (here é).
    headers = {"cookie": 'recsys_status_session="1.0123456789abcdef.99999999999.\\351"'}
    for path in ("/v1/status", "/v1/status/login"):
        response = gateway.client.get(path, headers=headers)
        assert response.status_code in (200, 303, 401), response.text


def test_a_browser_with_a_bad_session_is_sent_to_the_form_and_the_cookie_dropped(
    gateway: Any,
) -> None:
    response = _page(gateway, "1.0123456789abcdef.99999999999.forged", **BROWSER)

    assert response.status_code == 303
    assert response.headers["location"] == "/v1/status/login"
    assert _cookie(response)["max-age"] == "0"


def test_a_session_signed_with_another_secret_is_refused(gateway: Any) -> None:
    elsewhere = Sessions(b"another-secret-of-another-deployment", 8 * 3600).issue(KEY_ID)
    assert _page(gateway, elsewhere).status_code == 401


def test_an_expired_session_is_refused(gateway: Any) -> None:
    sessions = Sessions(SECRET.encode(), 8 * 3600)
    nine_hours_ago = time.time() - 9 * 3600
    expired = sessions.issue(KEY_ID, now=nine_hours_ago)
    fresh = sessions.issue(KEY_ID)

    assert _page(gateway, expired).status_code == 401
    assert _page(gateway, fresh).status_code == 200


def test_a_shorter_lifetime_setting_ends_longer_sessions(start: Any) -> None:
    long_lived = Sessions(SECRET.encode(), 8 * 3600).issue(KEY_ID)
    gateway = start(session_max_age_seconds=3600)

    assert _page(gateway, long_lived).status_code == 401
    assert _page(gateway, Sessions(SECRET.encode(), 3600).issue(KEY_ID)).status_code == 200


def _signed(secret: bytes, body: str) -> str:
    """``body`` signed as the module docstring of ``gateway.status_page.session`` says."""
    digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def test_sessions_refuse_a_malformed_token_even_when_it_is_signed() -> None:
    secret, now = b"k" * 32, 1_000_000.0
    sessions = Sessions(secret, 600)
    issued = sessions.issue("0123456789abcdef", now=now)

    assert issued == _signed(secret, "1.0123456789abcdef.1000600")
    assert sessions.key_id(issued, now=now) == "0123456789abcdef"
    assert sessions.key_id(issued, now=now + 600) is None  # expired
    for body in (
        "1.0123456789abcde.1000300",  # a key id of 15 digits
        "1.0123456789abcdef.-5",
        "1.0123456789abcdef.soon",
        "2.0123456789abcdef.1000300",  # an unknown version
    ):
        assert sessions.key_id(_signed(secret, body), now=now) is None, body
    assert sessions.key_id(issued + ".extra", now=now) is None


def test_the_sessions_of_a_revoked_key_end_at_the_next_request(start: Any) -> None:
    first = start()
    token = _cookie(_sign_in(first)).value
    # Another replica, or this one restarted, with the same secret and keys: still signed in.
    assert _page(start(), token).status_code == 200
    # The viewer key removed from API_KEYS: its session ends.
    revoked = start(api_keys="ck:client,ak:admin")
    response = _page(revoked, token)
    assert response.status_code == 401
    assert "no longer configured" in response.json()["detail"]
    # The same key given another role: the role is looked up again, and refused; a browser is
    # sent to the sign-in form (where that key is refused in words), its cookie dropped.
    demoted = start(api_keys="ck:client,ak:admin,vk:client")
    assert _page(demoted, token).status_code == 403
    browser = _page(demoted, token, **BROWSER)
    assert browser.status_code == 303
    assert browser.headers["location"] == "/v1/status/login"
    assert _cookie(browser)["max-age"] == "0"
