"""The one check every error test makes: the answer is a problem document (RFC 9457)."""

from __future__ import annotations

from typing import Any

import httpx

from recsys_shared.web.problems import PROBLEM_MEDIA_TYPE


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
