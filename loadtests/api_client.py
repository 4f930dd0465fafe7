"""The few calls the runner and the fault script make outside Locust's visitors.

Readiness checks and admin actions (retrain, activate) go through ``requests`` (one of Locust's
own dependencies), never through a proxy: the system under test is on this machine. Inside
Locust, gevent has patched the sockets, so these calls do not block the visitors.
"""

from __future__ import annotations

from typing import Any

import requests

Answer = tuple[int, Any]


class Api:
    """The gateway at ``host``; every call answers ``(status, JSON body or None)``, status 0
    when nothing answered."""

    def __init__(self, host: str, key: str | None = None, *, timeout: float = 5.0) -> None:
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment: the target is local
        if key:
            self.session.headers["X-API-Key"] = key

    def call(self, method: str, path: str, body: Any = None) -> Answer:
        url = path if path.startswith("http") else f"{self.host}{path}"
        try:
            response = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException:
            return 0, None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    def get(self, path: str) -> Answer:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Answer:
        return self.call("POST", path, body)

    def serving_version(self, user_id: str = "1") -> int | None:
        """The model version of a user's list when it is personalised, else None."""
        status, body = self.get(f"/v1/users/{user_id}/recommendations?k=1")
        if status == 200 and isinstance(body, dict) and body.get("strategy") == "personalized":
            version = body.get("model_version")
            return int(version) if version is not None else None
        return None
