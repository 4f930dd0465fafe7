"""The operator status page (viewer or admin): the system at a glance, as HTML a browser opens.

A person signs in once at ``/v1/status/login`` with a key in the form body and gets a signed
session cookie for ``/v1/status`` only (``gateway.status_page.session``); a script sends the
key in the ``X-API-Key`` header as everywhere else. A key in the URL (``?key=``) is refused
with a 400 that says why: URLs end up in proxies' logs, traces and browser histories. The
page is rendered on the server (``gateway.status_page``): no script runs and nothing is
loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import APIKeyCookie

from gateway.auth import Role, admit, api_key_header, authorize
from gateway.config import Settings
from gateway.deps import GatewayState, StateDep
from gateway.errors import PROBLEM_RESPONSES
from gateway.experiments import ExperimentRuntime
from gateway.routes.drift import read_drift
from gateway.routes.pipeline import read_pipeline_status
from gateway.status_page import experiments, sections
from gateway.status_page import markup as ui
from gateway.status_page.metrics import read_process_metrics
from gateway.status_page.session import (
    COOKIE_NAME,
    COOKIE_PATH,
    Sessions,
    clear_session_cookie,
    cookie_is_secure,
    from_this_site,
    set_session_cookie,
)
from recsys_shared import code_version, keys
from recsys_shared.errors import (
    AuthenticationRequired,
    InvalidInput,
    PermissionDenied,
    RecsysError,
)
from recsys_shared.schemas import Decision, FieldError, Problem
from recsys_shared.web.problems import API_KEY_CHALLENGE

log = logging.getLogger(__name__)

PAGE = COOKIE_PATH
SIGN_IN = f"{COOKIE_PATH}/login"
SIGN_OUT = f"{COOKIE_PATH}/logout"
MAX_VERSIONS = 20  # newest versions listed
MAX_ENDED_EXPERIMENTS = 5  # latest ended experiments listed
MAX_KEY_LENGTH = 1024
_FORM = "application/x-www-form-urlencoded"
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


class KeyInUrl(RecsysError):
    status = 400
    title = "API key in the URL"
    slug = "key-in-url"


async def _refuse_key_in_url(request: Request) -> None:
    if "key" in request.query_params:
        raise KeyInUrl(
            "The status page does not take an API key in the URL (?key=): proxies' logs, "
            "traces and the browser's history keep URLs. Sign in at "
            f"{SIGN_IN} (the key goes in a form body) or send the X-API-Key header, and "
            "replace the key if that URL was shared or logged."
        )


router = APIRouter(prefix=PAGE, tags=["status"], dependencies=[Depends(_refuse_key_in_url)])

session_cookie = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    description=f"The status page's session, set by signing in at POST {SIGN_IN}.",
)
_VIEWER = [Role.VIEWER.value]
HeaderKey = Annotated[str | None, Security(api_key_header, scopes=_VIEWER)]
SessionToken = Annotated[str | None, Security(session_cookie, scopes=_VIEWER)]

_BOTH = {"application/problem+json": {}, "text/html": {"schema": {"type": "string"}}}
_KEY_IN_URL: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Problem,
        "content": {"application/problem+json": {}},
        "description": "An API key in the URL (`?key=`): refused, the problem says why",
    }
}


def _sessions(settings: Settings) -> Sessions:
    return Sessions(settings.session_key, settings.session_max_age_seconds)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def _viewer(
    request: Request, state: GatewayState, key: str | None, token: str | None
) -> Role:
    """The role of the key in the header (it wins) or of the session's key."""
    if key is not None:
        return await authorize(request, key, required=Role.VIEWER)
    if token is None:
        raise AuthenticationRequired(
            f"Sign in at {SIGN_IN}, or send a key with the viewer or admin role in the "
            "X-API-Key header."
        )
    key_id = _sessions(state.settings).key_id(token)
    role = state.api_keys.role_of_id(key_id) if key_id else None
    if key_id is None or role is None:
        raise AuthenticationRequired(
            "The status page's session has expired, was altered, or its key is no longer "
            f"configured; sign in again at {SIGN_IN}."
        )
    return await admit(request, role, key_id, required=Role.VIEWER)


async def _read_experiments(
    runtime: ExperimentRuntime,
) -> tuple[experiments.Shown | None, list[experiments.Shown]]:
    """The running experiment and the latest ended ones, reported as GET /v1/experiments
    reports them (from the same store and counters)."""
    kept = await runtime.store.all()
    running = next((one for one in kept if one.state.decision is Decision.RUNNING), None)
    ended = sorted(
        (one for one in kept if one.state.decision is not Decision.RUNNING),
        key=lambda one: one.state.ended_at or one.created_at,
        reverse=True,
    )[:MAX_ENDED_EXPERIMENTS]
    shown = ([running] if running is not None else []) + ended
    counters = await asyncio.gather(*(runtime.store.counters(one.id) for one in shown))
    views = [
        experiments.Shown(one, runtime.report(one, counted))
        for one, counted in zip(shown, counters, strict=True)
    ]
    if running is None:
        return None, views
    return views[0], views[1:]


@router.get(
    "",
    response_class=HTMLResponse,
    summary="Status page: models, experiments, drift, ingestion, cache, latency (HTML; viewer "
    "or admin)",
    description=f"For a browser: sign in at `{SIGN_IN}` first (the session cookie then "
    "authenticates); scripts send the `X-API-Key` header. A browser (`Accept: text/html`) "
    "without a valid session is sent to the sign-in form.",
    responses={
        **PROBLEM_RESPONSES,
        **_KEY_IN_URL,
        303: {"description": "A browser without a valid session: sent to the sign-in form"},
    },
)
async def status_page(
    request: Request,
    state: StateDep,
    key: HeaderKey = None,
    token: SessionToken = None,
) -> Response:
    try:
        await _viewer(request, state, key, token)
    except (AuthenticationRequired, PermissionDenied):
        # A wrong key in the header is a script's mistake, not a page to sign in to; a browser
        # whose session ended, or whose key has lost the viewer role, signs in again.
        if key is not None or not _wants_html(request):
            raise
        response = RedirectResponse(SIGN_IN, status_code=303, headers=_HEADERS)
        if token is not None:
            clear_session_cookie(
                response, secure=cookie_is_secure(request, state.settings.environment)
            )
        return response
    redis = state.redis
    versions, drift, pipeline, (running, ended) = await asyncio.gather(
        state.registry.list(),
        read_drift(redis, keys.DRIFT_HISTORY_LENGTH),
        read_pipeline_status(redis, state.settings.partitions),
        _read_experiments(state.experiments),
    )
    html = ui.page(
        title="recsys status",
        subtitle=sections.subtitle(code_version()),
        sections=[
            sections.models(versions[:MAX_VERSIONS]),
            experiments.section(running, ended),
            sections.drift(drift.history),
            sections.ingestion(pipeline),
            sections.serving(read_process_metrics()),
        ],
        sign_out=SIGN_OUT if key is None else None,
    )
    return HTMLResponse(html, headers=_HEADERS)


@router.get(
    "/login",
    response_class=HTMLResponse,
    summary="The status page's sign-in form (HTML)",
    responses={
        **_KEY_IN_URL,
        303: {"description": "Already signed in: sent to the status page"},
    },
)
async def sign_in_form(request: Request, state: StateDep) -> Response:
    # The cookie is read by hand: this form needs no authentication, it only skips itself
    # for a browser that is signed in already.
    token = request.cookies.get(COOKIE_NAME)
    key_id = _sessions(state.settings).key_id(token) if token else None
    if key_id is not None and state.api_keys.role_of_id(key_id) is not None:
        return RedirectResponse(PAGE, status_code=303, headers=_HEADERS)
    return HTMLResponse(ui.sign_in_page(action=SIGN_IN), headers=_HEADERS)


async def _form_key(request: Request) -> str:
    """The ``key`` field of a URL-encoded form body."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    fields: dict[str, list[str]] = {}
    if content_type == _FORM:
        try:
            fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
        except ValueError:
            fields = {}
    key = (fields.get("key") or [""])[0]
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            f"The sign-in needs the API key in the 'key' field of an {_FORM} body "
            f"(1 to {MAX_KEY_LENGTH} characters).",
            errors=[FieldError(field="key", message="a key of 1 to 1024 characters is required")],
        )
    return key


@router.post(
    "/login",
    status_code=303,
    response_class=RedirectResponse,
    response_description="Signed in: the session cookie in `Set-Cookie`, the page in `Location`",
    summary="Sign in to the status page with a viewer or admin key (form body)",
    description="Sets the session cookie (HttpOnly, SameSite=Strict, Path=/v1/status, Secure "
    "over https) and sends the browser to the page. Accepted only from this gateway's own "
    "form: the browser's `Sec-Fetch-Site` (or `Origin`) must say so.",
    responses={
        # A browser's refusals come back as the form (HTML); the rest as problems only.
        **{status: {**PROBLEM_RESPONSES[status], "content": _BOTH} for status in (401, 403, 422)},
        **{status: PROBLEM_RESPONSES[status] for status in (413, 415, 429)},
        **_KEY_IN_URL,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["key"],
                        "properties": {
                            "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}
                        },
                    }
                }
            },
        }
    },
)
async def sign_in(request: Request, state: StateDep) -> Response:
    try:
        if not from_this_site(request):
            raise PermissionDenied(
                "Sign-in is accepted from this gateway's own form only (Sec-Fetch-Site or "
                "Origin); scripts send the X-API-Key header instead."
            )
        identified = state.api_keys.identify(await _form_key(request))
        if identified is None:
            raise AuthenticationRequired("The API key is not valid.")
        role, key_id = identified
        await admit(request, role, key_id, required=Role.VIEWER)
    except (AuthenticationRequired, PermissionDenied, InvalidInput) as refused:
        if not _wants_html(request):
            raise
        page = ui.sign_in_page(action=SIGN_IN, error=refused.detail)
        challenge = API_KEY_CHALLENGE if refused.status == 401 else {}
        return HTMLResponse(page, status_code=refused.status, headers=_HEADERS | challenge)
    log.info("status page: signed in with key %s (role %s)", key_id, role)
    sessions = _sessions(state.settings)
    response = RedirectResponse(PAGE, status_code=303, headers=_HEADERS)
    set_session_cookie(
        response,
        sessions.issue(key_id),
        max_age=sessions.max_age_seconds,
        secure=cookie_is_secure(request, state.settings.environment),
    )
    return response


@router.post(
    "/logout",
    status_code=303,
    response_class=RedirectResponse,
    response_description="Signed out: the cookie deleted, the sign-in form in `Location`",
    summary="Sign out of the status page (deletes the session cookie)",
    responses={403: PROBLEM_RESPONSES[403], **_KEY_IN_URL},
)
async def sign_out(request: Request, state: StateDep) -> Response:
    if not from_this_site(request):
        raise PermissionDenied("Sign-out is accepted from this gateway's own page only.")
    response = RedirectResponse(SIGN_IN, status_code=303, headers=_HEADERS)
    clear_session_cookie(response, secure=cookie_is_secure(request, state.settings.environment))
    return response
