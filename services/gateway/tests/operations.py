"""Every /v1 operation of the gateway and the role it needs: one table for the tests of the
OpenAPI document and of the keys, so that a new route is added to both at once."""

from __future__ import annotations

from gateway.auth import Role

#: (method, path template) → the role a key needs; None for the status page's sign-in form and
#: sign-out, browser pages that take no key (see test_status.py).
OPERATIONS: dict[tuple[str, str], Role | None] = {
    ("post", "/v1/events"): Role.CLIENT,
    ("get", "/v1/users/{user_id}/recommendations"): Role.CLIENT,
    ("get", "/v1/items/popular"): Role.CLIENT,
    ("get", "/v1/items/{item_id}/similar"): Role.CLIENT,
    ("put", "/v1/items"): Role.CLIENT,
    ("put", "/v1/items/{item_id}"): Role.CLIENT,
    ("get", "/v1/items/{item_id}"): Role.CLIENT,
    ("patch", "/v1/items/{item_id}"): Role.CLIENT,
    ("delete", "/v1/items/{item_id}"): Role.CLIENT,
    ("delete", "/v1/users/{user_id}"): Role.ADMIN,
    ("get", "/v1/models"): Role.ADMIN,
    ("get", "/v1/models/active"): Role.ADMIN,
    ("post", "/v1/models/retrain"): Role.ADMIN,
    ("post", "/v1/models/{version}/activate"): Role.ADMIN,
    ("get", "/v1/tasks/{task_id}"): Role.ADMIN,
    ("get", "/v1/pipeline"): Role.ADMIN,
    ("get", "/v1/pipeline/dead-letters"): Role.ADMIN,
    ("post", "/v1/pipeline/dead-letters/replay"): Role.ADMIN,
    ("get", "/v1/drift"): Role.ADMIN,
    ("post", "/v1/drift/check"): Role.ADMIN,
    ("get", "/v1/experiments"): Role.ADMIN,
    ("post", "/v1/experiments"): Role.ADMIN,
    ("get", "/v1/experiments/{experiment_id}"): Role.ADMIN,
    ("post", "/v1/experiments/{experiment_id}/stop"): Role.ADMIN,
    ("get", "/v1/status"): Role.VIEWER,
    ("get", "/v1/status/login"): None,
    ("post", "/v1/status/login"): None,
    ("post", "/v1/status/logout"): None,
}
KEYED = {operation for operation, role in OPERATIONS.items() if role is not None}
SIGN_IN = {operation for operation, role in OPERATIONS.items() if role is None}
ADMIN = {operation for operation, role in OPERATIONS.items() if role is Role.ADMIN}

#: A value for each path parameter, to call an operation.
TEMPLATE_VALUES = {
    "{user_id}": "x",
    "{item_id}": "i1",
    "{version}": "1",
    "{task_id}": "x",
    "{experiment_id}": "1",
}


def fill(path: str) -> str:
    """The path with its parameters filled in."""
    for template, value in TEMPLATE_VALUES.items():
        path = path.replace(template, value)
    return path


def requests(operations: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The operations as requests: upper-case methods, parameters filled in."""
    return {(method.upper(), fill(path)) for method, path in operations}
