"""Every error as RFC 9457 problem details: the domain's errors, validation, HTTP errors."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys_shared import metrics
from recsys_shared.errors import (
    AuthenticationRequired,
    InvalidInput,
    PayloadTooLarge,
    RecsysError,
    RetryableError,
    StoreError,
    StoreUnavailable,
)
from recsys_shared.logging import (
    REQUEST_ID_HEADER,
    request_id_var,
)
from recsys_shared.schemas import (
    MAX_ERRORS_PER_ENTRY,
    PATTERN_RULES,
    PROBLEM_MEDIA_TYPE,
    FieldError,
    Problem,
)
from recsys_shared.web.methods import served_methods
from recsys_shared.web.observability import SECURITY_HEADERS

log = logging.getLogger("recsys.http")
#: The error type of a body that is not even JSON (pydantic's, kept by ``validation_errors``).
JSON_INVALID = "json_invalid"

#: The challenge every 401 names (RFC 9110 requires one): API keys have no registered scheme,
#: so the one FastAPI's APIKeyHeader sends.
API_KEY_CHALLENGE = {"WWW-Authenticate": "APIKey"}


def problem_response(
    error: RecsysError, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    problem = Problem(
        type=error.type_uri,
        title=error.title,
        status=error.status,
        detail=error.detail,
        errors=listed_errors(error.errors),
        request_id=request_id_var.get(),
    )
    all_headers = dict(headers or {})
    if isinstance(error, RetryableError):
        all_headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, AuthenticationRequired):
        all_headers.update(API_KEY_CHALLENGE)
    return JSONResponse(
        problem.model_dump(),
        status_code=error.status,
        headers=all_headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _internal_error(error: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=error)
    return _generic_problem(500, "An unexpected error occurred; it was logged.")


def _generic_problem(status: int, detail: str) -> JSONResponse:
    problem = Problem.about_blank(status, detail, request_id=request_id_var.get())
    return JSONResponse(problem.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE)


def validation_errors(raw: list[Any]) -> list[FieldError]:
    """Pydantic errors as the contract lists them: where, which event index, what is wrong."""
    return [_field_error(error) for error in raw]


def _field_error(error: Mapping[str, Any]) -> FieldError:
    if error.get("type") == JSON_INVALID:
        return _not_json(error)
    if error.get("loc") == ("body",) and isinstance(error.get("input"), bytes):
        # FastAPI reads a body as JSON only when its Content-Type says so and hands the
        # model the raw bytes otherwise: "should be a valid dictionary" would hide why.
        return FieldError(
            field="body",
            message="must be JSON, sent with Content-Type: application/json",
            type="content_type",
        )
    location = [part for part in error.get("loc", ()) if part != "body"]
    in_batch = len(location) >= 2 and location[0] in {"events", "items"}
    return FieldError(
        field=_dotted(location),
        message=_pattern_message(error) or error.get("msg", "invalid"),
        type=error.get("type", "invalid"),
        index=location[1] if in_batch and isinstance(location[1], int) else None,
    )


def _pattern_message(error: Mapping[str, Any]) -> str | None:
    """A refused string's message in words, naming the first character that breaks the rule,
    e.g. ``has U+0020 at character 1 (an id has no whitespace, ...)``; ``None`` for other
    errors and for a pattern the contract does not describe (pydantic's message stands)."""
    if error.get("type") != "string_pattern_mismatch":
        return None
    rule = PATTERN_RULES.get(str((error.get("ctx") or {}).get("pattern")))
    if rule is None:
        return None
    text = error.get("input")
    found = re.search(rule.breaks, text) if isinstance(text, str) else None
    if found is None:
        return f"does not follow the rule: {rule.rule}"
    return f"has {_character(found.group())} at character {found.start()} ({rule.rule})"


def _character(char: str) -> str:
    code = f"U+{ord(char):04X}"
    return f"'{char}' ({code})" if char.isprintable() and not char.isspace() else code


def _not_json(error: Mapping[str, Any]) -> FieldError:
    # FastAPI places a decode error at ("body", <character offset>): an offset, not an entry.
    # Pydantic's own (the fast lane's bodies) is at ("body",) and names line and column.
    location: tuple[Any, ...] = tuple(error.get("loc", ()))
    last = location[-1] if location else None
    reason = (error.get("ctx") or {}).get("error")
    message = "is not valid JSON" + (f": {reason}" if reason else "")
    if isinstance(last, int):
        message += f" at character {last}"
    return FieldError(field="body", message=message, type=JSON_INVALID)


def _dotted(location: list[Any]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


#: Called with the request and the listed errors before a 422 is sent (e.g. to count rejects);
#: a ``RecsysError`` it raises is the answer instead (e.g. a key check the refusal came before).
InvalidInputHook = Callable[[Request, list[FieldError]], Awaitable[None]]


def install_error_handlers(app: FastAPI, on_invalid: InvalidInputHook | None) -> None:
    """Every error answers as problem details; ``on_invalid`` sees each refused input."""
    app.add_exception_handler(RecsysError, _on_recsys_error)
    refuse = _input_refusal(on_invalid)
    app.add_exception_handler(RequestValidationError, _validation_handler(refuse))
    app.add_exception_handler(StarletteHTTPException, _http_error_handler(refuse))
    app.add_exception_handler(Exception, _on_unexpected_error)


async def _on_recsys_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecsysError)
    if isinstance(exc, StoreUnavailable):
        metrics.REDIS_ERRORS.labels(type(exc).__name__).inc()
    if isinstance(exc, StoreError):
        # Redis refused a command a retry will not fix: a bug, logged with its trace.
        metrics.REDIS_ERRORS.labels(type(exc).__name__).inc()
        return _internal_error(exc)
    if exc.status >= 500:
        log.warning("answering %d: %s", exc.status, exc.detail)
    return problem_response(exc)


#: Answers a request's input errors: a 422, or what ``on_invalid`` raises instead.
Refusal = Callable[[Request, list[FieldError]], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


def _input_refusal(on_invalid: InvalidInputHook | None) -> Refusal:
    async def refuse(request: Request, errors: list[FieldError]) -> Response:
        if on_invalid is not None:
            try:
                await on_invalid(request, errors)
            except RecsysError as refusal:
                return await _on_recsys_error(request, refusal)
        return problem_response(InvalidInput(invalid_input_detail(errors), errors=errors))

    return refuse


def _validation_handler(refuse: Refusal) -> Handler:
    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return await refuse(request, validation_errors(list(exc.errors())))

    return on_validation_error


def _http_error_handler(refuse: Refusal) -> Handler:
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        unreadable = _unreadable_body(exc)
        if unreadable is not None:
            return await refuse(request, [unreadable])
        return await _on_http_error(request, exc)

    return on_http_error


def _unreadable_body(exc: StarletteHTTPException) -> FieldError | None:
    """FastAPI answers a JSON body it could not decode for a reason other than its syntax
    with a bare 400 (raised from the decoder's error): bytes that are not UTF-8, an integer
    longer than Python reads (4,300 digits), nesting deeper than its recursion limit. That
    body is not valid JSON either, so it is refused as one with a syntax error is."""
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError | RecursionError):
        return None
    if isinstance(cause, UnicodeDecodeError):
        reason = f"byte {cause.start} is not UTF-8 ({cause.object[cause.start]:#04x})"
    elif isinstance(cause, RecursionError):
        reason = "nested too deep to read"
    else:
        reason = str(cause)
    return FieldError(field="body", message=f"is not valid JSON: {reason}", type=JSON_INVALID)


#: How many fields and entries a 422's detail names before "and N more" (``errors`` lists
#: every entry).
_NAMED_IN_DETAIL = 5


def invalid_input_detail(errors: list[FieldError]) -> str:
    """The 422's one line for a person: which fields and, in a batch, which entries, e.g.
    ``2 invalid fields (events[0], events[1].user_id) in entries 0, 1; nothing of the batch
    was stored.``, and how many of the errors are listed when not all are."""
    fields = list(dict.fromkeys(error.field for error in errors))
    noun = "field" if len(fields) == 1 else "fields"
    detail = f"{len(fields)} invalid {noun} ({_first_few(fields)})"
    indexes = sorted({error.index for error in errors if error.index is not None})
    if indexes:
        entries = "entry" if len(indexes) == 1 else "entries"
        detail += f" in {entries} {_first_few(indexes)}; nothing of the batch was stored"
    listed = len(listed_errors(errors))
    if listed < len(errors):
        detail += f"; {listed} of the {len(errors)} errors are listed"
        detail += f" (at most {MAX_ERRORS_PER_ENTRY} an entry)"
    return detail + "."


def listed_errors(errors: list[FieldError]) -> list[FieldError]:
    """The errors a problem lists: every entry's first ``MAX_ERRORS_PER_ENTRY`` (and as many
    of the request's own), in their order."""
    seen: Counter[int | None] = Counter()
    listed = []
    for error in errors:
        seen[error.index] += 1
        if seen[error.index] <= MAX_ERRORS_PER_ENTRY:
            listed.append(error)
    return listed


def _first_few(names: list[str] | list[int]) -> str:
    shown = ", ".join(str(name) for name in names[:_NAMED_IN_DETAIL])
    more = len(names) - _NAMED_IN_DETAIL
    return f"{shown} and {more} more" if more > 0 else shown


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == PayloadTooLarge.status:
        # The body limit found out while streaming: the same problem as a large
        # Content-Length refused up front.
        return problem_response(PayloadTooLarge(str(exc.detail)))
    # Starlette names the methods of the first route on the path only; a path served by
    # several routes (GET, PUT, DELETE of one item) allows all of theirs.
    allowed = []
    if exc.status_code == 405:
        allowed = sorted(served_methods(request.app.router.routes, request.scope))
    detail = _routing_detail(request, exc, allowed) or str(exc.detail)
    response = _generic_problem(exc.status_code, detail)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    if allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _routing_detail(
    request: Request, exc: StarletteHTTPException, allowed: list[str]
) -> str | None:
    """For the router's own 404 and 405 (their bare status phrase names nothing), what it
    could not match: the path (cut short: it is the client's input) and, for a 405, the
    methods the path does serve. None for any other error."""
    if exc.status_code not in (404, 405) or exc.detail != HTTPStatus(exc.status_code).phrase:
        return None
    path = request.url.path
    shown = path if len(path) <= 200 else path[:200] + "…"
    if exc.status_code == 404:
        return f"Nothing is served at {shown}."
    serves = f"; it serves {', '.join(allowed)}" if allowed else ""
    return f"{request.method} is not served at {shown}{serves}."


async def _on_unexpected_error(_: Request, exc: Exception) -> Response:
    # Starlette answers this one from its outermost layer, past ObservabilityMiddleware:
    # the headers every other answer gets there are set here.
    response = _internal_error(exc)
    request_id = request_id_var.get()
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    for name, value in SECURITY_HEADERS:
        response.headers[name.decode()] = value.decode()
    return response
