"""The checks every API test makes of an answer: a 200 with its JSON body, or a problem
document (RFC 9457)."""

from __future__ import annotations

from typing import Any

import httpx

from recsys_shared.schemas import PROBLEM_MEDIA_TYPE


def assert_problem(
    response: httpx.Response, status: int, problem: str | None = None
) -> dict[str, Any]:
    """``response`` is a problem document with ``status`` and, when given, the type
    ``urn:recsys:problem:<problem>``; its body, for the test's own checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, response.headers
    body: dict[str, Any] = response.json()
    if problem is not None:
        assert body["type"] == f"urn:recsys:problem:{problem}", body
    return body


def ok_body(response: httpx.Response) -> dict[str, Any]:
    """``response`` is a 200; its JSON body."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
