"""Locust load test of the public API: realistic, weighted user journeys.

Run it through ``make loadtest`` (``loadtests/run.py``), which sets up the virtualenv, starts the
system when needed, and turns the results into a report and an SLO verdict. By hand:

    .venv-loadtest/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --headless -u 20 -r 5 -t 60s --csv reports/locust --html reports/locust.html

What one simulated visitor does (``WEIGHTS`` below, one function per action):

- recommendations for a known MovieLens user, drawn with the demo's own skewed activity
  (``data/user_weights.csv``: heavy raters are asked for far more often), sometimes in a category;
- recommendations for a user the system has never seen (cold start: popular items, never a 404);
- similar items for a movie drawn by popularity (``data/movies.csv``);
- popular items, overall or in a category (weighted like the catalogue's genres);
- a click or a rating on an item from a recommendation list it has just received, sent with that
  list's ``recommendation_id`` (position-biased: the first items are clicked most);
- now and then a catalogue update: ``PUT /v1/items/{id}`` of an existing movie with its own
  title and genres (a PUT replaces the item, so it sends everything back unchanged).

Requests are named by route template so statistics aggregate per endpoint. A response fails on
any 5xx, on a connection error, on a 4xx the journey did not expect, and on a body that is not
the documented shape. A fallback (``strategy`` other than ``personalized`` for a known user, or
any ``fallback_reason`` on a list that should have been ranked by a model) is not a failure: it
is counted in a custom statistic, aggregated across workers in distributed runs, and written to
``<csv prefix>_journeys.json`` next to Locust's CSV files.

Load shapes (``LoadTestShape`` classes, chosen with ``LOADTEST_SHAPE``): ``steady`` (default),
``ramp``, ``spike``; ``none`` leaves the plain ``-u``/``-r``/``-t`` behaviour. Every shape reads
its size from ``--users``, ``--spawn-rate`` and ``--run-time``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

from locust import FastHttpUser, LoadTestShape, between, events
from locust.env import Environment
from locust.runners import WorkerRunner

log = logging.getLogger("recsys.loadtest")

DATA = Path(__file__).resolve().parent / "data"
CLIENT_KEY = os.environ.get("LOADTEST_CLIENT_KEY", "dev-client-key")
#: Think time between two actions of one visitor, in seconds.
THINK_MIN = float(os.environ.get("LOADTEST_THINK_MIN", "0.5"))
THINK_MAX = float(os.environ.get("LOADTEST_THINK_MAX", "1.5"))
#: A visitor keeps one identity for this many actions on average, then a new visitor arrives.
SESSION_ACTIONS = 8

# ── route templates: the names requests are aggregated under ─────────────────────────────
USER_RECOMMENDATIONS = "/v1/users/{id}/recommendations"
SIMILAR_ITEMS = "/v1/items/{id}/similar"
POPULAR_ITEMS = "/v1/items/popular"
EVENTS = "/v1/events"
ITEM = "/v1/items/{id}"

PERSONALIZED = "personalized"
STRATEGIES = {"personalized", "similar", "popular"}


# ── the ids the journeys draw from ───────────────────────────────────────────────────────
def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


class WeightedChoice:
    """Draws from ``values`` with probabilities proportional to ``weights`` (O(log n))."""

    def __init__(self, values: Sequence[Any], weights: Sequence[float]) -> None:
        if not values or len(values) != len(weights):
            raise ValueError("WeightedChoice needs as many weights as values, and at least one")
        self.values = list(values)
        self.cumulative = list(itertools.accumulate(weights))

    def __call__(self) -> Any:
        return random.choices(self.values, cum_weights=self.cumulative)[0]


_USERS = _rows("user_weights.csv")
_MOVIES = _rows("movies.csv")
KNOWN_USER = WeightedChoice([row["user_id"] for row in _USERS], [int(r["ratings"]) for r in _USERS])
MOVIE = WeightedChoice(_MOVIES, [int(row["ratings"]) for row in _MOVIES])
_GENRES = Counter(
    genre for row in _MOVIES for genre in row["categories"].split("|") if genre
).most_common(12)
CATEGORY = WeightedChoice([genre for genre, _ in _GENRES], [count for _, count in _GENRES])
#: MovieLens' own rating scale; users mostly rate what they liked.
RATING = WeightedChoice([1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0], [2, 5, 4, 16, 12, 25, 9, 17])


# ── the custom statistic: fallbacks and status codes, merged across workers ──────────────
class JourneyStats:
    """What Locust's own statistics do not say: which strategy answered, and the status codes.

    ``lists``: recommendation lists received, by journey kind and ``strategy/fallback_reason``.
    ``fallbacks_per_second``: known-user lists that were not personalised, per wall-clock second,
    to see when a fault made the system fall back.
    """

    def __init__(self) -> None:
        self.lists: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.fallbacks_per_second: Counter[str] = Counter()

    def record_list(self, kind: str, strategy: str, reason: str | None) -> None:
        self.lists[f"{kind}|{strategy}/{reason or '-'}"] += 1
        if kind == "known_user" and strategy != PERSONALIZED:
            self.fallbacks_per_second[str(int(time.time()))] += 1

    def record_status(self, status: int) -> None:
        self.statuses[str(status)] += 1

    def drain(self) -> dict[str, dict[str, int]]:
        """What was counted since the last drain (a worker sends it to the master)."""
        data = self.as_dict()
        self.lists, self.statuses, self.fallbacks_per_second = Counter(), Counter(), Counter()
        return data

    def merge(self, data: dict[str, dict[str, int]] | None) -> None:
        if not data:
            return
        self.lists.update(data.get("lists", {}))
        self.statuses.update(data.get("statuses", {}))
        self.fallbacks_per_second.update(data.get("fallbacks_per_second", {}))

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "lists": dict(self.lists),
            "statuses": dict(self.statuses),
            "fallbacks_per_second": dict(sorted(self.fallbacks_per_second.items())),
        }

    def known_user_fallbacks(self) -> tuple[int, int]:
        total = fallbacks = 0
        for key, count in self.lists.items():
            kind, outcome = key.split("|", 1)
            if kind == "known_user":
                total += count
                if not outcome.startswith(PERSONALIZED + "/"):
                    fallbacks += count
        return fallbacks, total


STATS = JourneyStats()


@events.test_start.add_listener
def _reset_journey_stats(environment: Environment, **_: Any) -> None:
    STATS.drain()


@events.report_to_master.add_listener
def _send_journey_stats(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["recsys_journeys"] = STATS.drain()


@events.worker_report.add_listener
def _merge_journey_stats(client_id: str, data: dict[str, Any], **_: Any) -> None:
    STATS.merge(data.get("recsys_journeys"))


@events.quitting.add_listener
def _write_journey_stats(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    fallbacks, total = STATS.known_user_fallbacks()
    log.info("known-user recommendation lists not personalised: %d of %d", fallbacks, total)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        path = Path(f"{prefix}_journeys.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(STATS.as_dict(), indent=1) + "\n", encoding="utf-8")


def _problem_title(response: Any) -> str:
    """The RFC 9457 title, so that failures group by kind rather than by request."""
    try:
        return str(response.json().get("title", "no title"))
    except (ValueError, AttributeError):
        return "no problem details"


def _check_list(body: dict[str, Any]) -> str | None:
    """What is wrong with a recommendation list, if anything."""
    if body.get("strategy") not in STRATEGIES:
        return f"unknown strategy {body.get('strategy')!r}"
    items = body.get("items")
    if not isinstance(items, list) or not all(
        isinstance(item, dict) and item.get("item_id") for item in items
    ):
        return "items is not a list of items"
    if not body.get("recommendation_id"):
        return "no recommendation_id"
    return None


def _count_list(body: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """Count which strategy produced a (valid) list: fallbacks are counted, not failed."""
    if body is not None:
        STATS.record_list(kind, body["strategy"], body.get("fallback_reason"))
    return body


# ── the actions: one function each, weighted below ───────────────────────────────────────
def recommend_for_known_user(visitor: RecsysVisitor) -> None:
    visitor.recommendations(visitor.known_user(), kind="known_user")


def recommend_for_known_user_in_category(visitor: RecsysVisitor) -> None:
    visitor.recommendations(visitor.known_user(), kind="known_user", category=CATEGORY())


def recommend_for_unknown_user(visitor: RecsysVisitor) -> None:
    visitor.recommendations(f"lt-new-{uuid.uuid4().hex[:16]}", kind="unknown_user")


def similar_items(visitor: RecsysVisitor) -> None:
    visitor.similar(MOVIE()["item_id"])


def popular_items(visitor: RecsysVisitor) -> None:
    visitor.call(
        "GET",
        "/v1/items/popular",
        POPULAR_ITEMS,
        200,
        params={"k": random.choice((10, 20))},
        validate=_check_list,
    )


def popular_items_in_category(visitor: RecsysVisitor) -> None:
    visitor.call(
        "GET",
        "/v1/items/popular",
        POPULAR_ITEMS,
        200,
        params={"k": 10, "category": CATEGORY()},
        validate=_check_list,
    )


def click_recommended_item(visitor: RecsysVisitor) -> None:
    user_id = visitor.known_user()
    listing = visitor.recommendations(user_id, kind="known_user")
    if listing is not None:
        visitor.interact(user_id, listing, "click")


def rate_recommended_item(visitor: RecsysVisitor) -> None:
    user_id = visitor.known_user()
    listing = visitor.recommendations(user_id, kind="known_user")
    if listing is not None:
        visitor.interact(user_id, listing, "rating")


def click_similar_item(visitor: RecsysVisitor) -> None:
    listing = visitor.similar(MOVIE()["item_id"])
    if listing is not None:
        visitor.interact(visitor.known_user(), listing, "click")


def update_catalogue_item(visitor: RecsysVisitor) -> None:
    movie = random.choice(_MOVIES)
    item = {
        "title": movie["title"],
        "categories": [genre for genre in movie["categories"].split("|") if genre],
        "available": True,
    }
    visitor.call(
        "PUT",
        f"/v1/items/{movie['item_id']}",
        ITEM,
        200,
        body=item,
        validate=lambda answer: (
            None
            if answer.get("item_id") == movie["item_id"] and answer.get("title") == movie["title"]
            else "not the item sent"
        ),
    )


#: Relative frequency of each action (a visitor picks one per think time).
WEIGHTS: dict[Callable[[RecsysVisitor], None], int] = {
    recommend_for_known_user: 30,
    recommend_for_known_user_in_category: 6,
    recommend_for_unknown_user: 8,
    similar_items: 16,
    popular_items: 8,
    popular_items_in_category: 8,
    click_recommended_item: 12,
    rate_recommended_item: 4,
    click_similar_item: 6,
    update_catalogue_item: 2,
}


# ── the visitor ───────────────────────────────────────────────────────────────────────────
class RecsysVisitor(FastHttpUser):
    """One visitor of the site; its actions are the functions of ``WEIGHTS`` above."""

    wait_time = between(THINK_MIN, THINK_MAX)
    default_headers: ClassVar[dict[str, str]] = {"X-API-Key": CLIENT_KEY}
    connection_timeout = 5.0
    network_timeout = 10.0
    tasks = WEIGHTS

    user_id: str
    actions_left: int

    def on_start(self) -> None:
        self._new_session()

    def _new_session(self) -> None:
        self.user_id = KNOWN_USER()
        self.actions_left = max(1, round(random.expovariate(1 / SESSION_ACTIONS)))

    def known_user(self) -> str:
        """The MovieLens user this visitor is, for a few actions; then a new visitor."""
        self.actions_left -= 1
        if self.actions_left < 0:
            self._new_session()
        return self.user_id

    def call(
        self,
        method: str,
        path: str,
        name: str,
        expected: int,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        validate: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> dict[str, Any] | None:
        """One request; returns the JSON body when it is the expected answer, else None.

        Fails the request on any 5xx, a connection error, any status but ``expected`` (a 4xx the
        journey did not expect), a body that is not a JSON object, and a body ``validate``
        finds wrong (it returns what is wrong, or None).
        """
        if params:
            path = f"{path}?{urlencode(params)}"
        with self.client.request(
            method, path, name=name, json=body, catch_response=True
        ) as response:
            status = response.status_code or 0
            STATS.record_status(status)
            if status == expected:
                try:
                    data = response.json()
                except ValueError:
                    response.failure(f"HTTP {status} with a body that is not JSON")
                    return None
                if not isinstance(data, dict):
                    response.failure(f"HTTP {status} with a body that is not a JSON object")
                    return None
                if validate is not None and (problem := validate(data)):
                    response.failure(f"HTTP {status} with a wrong body: {problem}")
                    return None
                response.success()
                return data
            if status == 0:
                response.failure(f"connection error: {type(response.error).__name__}")
            elif status >= 500:
                response.failure(f"HTTP {status} (server error): {_problem_title(response)}")
            else:
                response.failure(f"HTTP {status} (unexpected): {_problem_title(response)}")
            return None

    def recommendations(self, user_id: str, *, kind: str, category: str | None = None) -> Any:
        params: dict[str, Any] = {"k": random.choice((10, 10, 10, 20))}
        if category:
            params["category"] = category
        body = self.call(
            "GET",
            f"/v1/users/{user_id}/recommendations",
            USER_RECOMMENDATIONS,
            200,
            params=params,
            validate=_check_list,
        )
        return _count_list(body, kind)

    def similar(self, item_id: str) -> Any:
        body = self.call(
            "GET",
            f"/v1/items/{item_id}/similar",
            SIMILAR_ITEMS,
            200,
            params={"k": 10},
            validate=_check_list,
        )
        return _count_list(body, "similar")

    def interact(self, user_id: str, listing: dict[str, Any], event_type: str) -> None:
        """A click or rating on an item of a list just received, with its recommendation_id."""
        items = listing["items"]
        if not items:
            return
        position = random.choices(
            range(len(items)), weights=[1 / (1 + i) for i in range(len(items))]
        )[0]
        event: dict[str, Any] = {
            "user_id": user_id,
            "item_id": items[position]["item_id"],
            "type": event_type,
            "recommendation_id": listing["recommendation_id"],
        }
        if event_type == "rating":
            event["value"] = RATING()
        self.call(
            "POST",
            "/v1/events",
            EVENTS,
            202,
            body={"events": [event]},
            validate=lambda answer: (
                None
                if answer.get("accepted", 0) + answer.get("duplicates", 0) == 1
                else "accepted + duplicates is not 1"
            ),
        )


# ── load shapes ──────────────────────────────────────────────────────────────────────────
class _Shape(LoadTestShape):
    """Base of the shapes: sized by ``--users``, ``--spawn-rate`` and ``--run-time``."""

    abstract = True
    use_common_options = True

    def size(self) -> tuple[int, float, float]:
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        users = int(getattr(options, "num_users", None) or 20)
        rate = float(getattr(options, "spawn_rate", None) or users)
        run_time = float(getattr(options, "run_time", None) or 60)
        return users, rate, run_time


class SteadyShape(_Shape):
    """Ramp up at the spawn rate, then hold ``--users`` until ``--run-time``."""

    abstract = True

    def tick(self) -> tuple[int, float] | None:
        users, rate, run_time = self.size()
        if self.get_run_time() >= run_time:
            return None
        return users, rate


class RampShape(_Shape):
    """From one user up to ``--users`` linearly over 80 % of the run, then hold: finds the knee."""

    abstract = True

    def tick(self) -> tuple[int, float] | None:
        users, rate, run_time = self.size()
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        target = max(1, math.ceil(users * min(1.0, elapsed / (0.8 * run_time))))
        return target, rate


class SpikeShape(_Shape):
    """A quarter of ``--users`` for 40 % of the run, all of them at once for 20 %, then back
    to the quarter for the last 40 %: does the system absorb a burst and recover after it?"""

    abstract = True

    def tick(self) -> tuple[int, float] | None:
        users, rate, run_time = self.size()
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        baseline = max(1, users // 4)
        if 0.4 * run_time <= elapsed < 0.6 * run_time:
            return users, max(rate, float(users))  # the whole spike within about a second
        return baseline, max(rate, float(users))


SHAPES: dict[str, type[_Shape] | None] = {
    "steady": SteadyShape,
    "ramp": RampShape,
    "spike": SpikeShape,
    "none": None,
}
_selected = os.environ.get("LOADTEST_SHAPE", "steady").strip().lower() or "steady"
if _selected not in SHAPES:
    raise SystemExit(f"LOADTEST_SHAPE={_selected!r}: choose one of {', '.join(SHAPES)}")
if (_shape := SHAPES[_selected]) is not None:
    _shape.abstract = False  # the one shape Locust picks up
