"""What one simulated visitor does: one function per action, and the weight table ``WEIGHTS``.

- recommendations for a known MovieLens user (``population.KNOWN_USER``), sometimes in a
  category;
- recommendations for a user the system has never seen (cold start: popular items, never a 404);
- similar items for a movie drawn by popularity; popular items, overall or in a category;
- a click or a rating on an item of a list just received, sent with that list's
  ``recommendation_id`` (position-biased: the first items are clicked most);
- now and then a catalogue update: ``PUT /v1/items/{id}`` of a movie with its own title and
  genres (a PUT replaces the item, so it sends everything back unchanged).

Requests are named by route template, so Locust aggregates them per endpoint. A response fails
on any 5xx, on a connection error, on a status the journey did not expect (an unexpected 4xx
too) and on a body that is not the documented shape. A fallback is not a failure: each list's
strategy goes to :data:`fallbacks.OUTCOMES`, which the SLO verdict reads.
"""

# mypy: disallow-untyped-decorators=False
# (Locust's EventHook.add_listener is untyped; its documented form is the decorator.)

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fallbacks import OUTCOMES
from locust import FastHttpUser, between, events
from locust.argument_parser import LocustArgumentParser
from population import CATEGORY, KNOWN_USER, MOVIE, MOVIES, RATING, WORKLOADS, genres

#: Think time between two actions of one visitor, in seconds: about 1.2 requests/s a visitor.
THINK_TIME = (0.5, 1.5)
#: A visitor keeps one identity for this many actions on average, then a new visitor arrives.
SESSION_ACTIONS = 8

# The route templates requests are aggregated under.
USER_RECOMMENDATIONS = "/v1/users/{id}/recommendations"
SIMILAR_ITEMS = "/v1/items/{id}/similar"
POPULAR_ITEMS = "/v1/items/popular"
EVENTS = "/v1/events"
ITEM = "/v1/items/{id}"

STRATEGIES = {"personalized", "similar", "popular"}
#: How a 5xx failure reads in Locust's error table; ``slo.server_errors`` counts these.
SERVER_ERROR = "HTTP {status} (server error): {title}"

Body = dict[str, Any]
Validator = Callable[[Body], str | None]


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("recsys journeys")
    group.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="site",
        env_var="LOADTEST_WORKLOAD",
        help="How visitors page through lists: site (k=10, first page) or movielens "
        "(k 5..44, offset 0..200)",
    )
    group.add_argument(
        "--client-keys",
        default="dev-client-key",
        env_var="LOADTEST_CLIENT_KEYS",
        help="Comma-separated client API keys; each visitor uses one (the rate limit is per key)",
    )


def _problem_title(response: Any) -> str:
    """The RFC 9457 title, so that failures group by kind rather than by request."""
    try:
        return str(response.json().get("title", "no title"))
    except (ValueError, AttributeError):
        return "no problem details"


def check_list(body: Body) -> str | None:
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
    visitor.popular()


def popular_items_in_category(visitor: RecsysVisitor) -> None:
    visitor.popular(category=CATEGORY())


def click_recommended_item(visitor: RecsysVisitor) -> None:
    user_id = visitor.known_user()
    if (listing := visitor.recommendations(user_id, kind="known_user")) is not None:
        visitor.interact(user_id, listing, "click")


def rate_recommended_item(visitor: RecsysVisitor) -> None:
    user_id = visitor.known_user()
    if (listing := visitor.recommendations(user_id, kind="known_user")) is not None:
        visitor.interact(user_id, listing, "rating")


def click_similar_item(visitor: RecsysVisitor) -> None:
    if (listing := visitor.similar(MOVIE()["item_id"])) is not None:
        visitor.interact(visitor.known_user(), listing, "click")


def update_catalogue_item(visitor: RecsysVisitor) -> None:
    movie = random.choice(MOVIES)
    item = {"title": movie["title"], "categories": genres(movie), "available": True}

    def same_item(answer: Body) -> str | None:
        same = answer.get("item_id") == movie["item_id"] and answer.get("title") == movie["title"]
        return None if same else "not the item sent"

    visitor.call("PUT", f"/v1/items/{movie['item_id']}", ITEM, 200, body=item, validate=same_item)


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

    wait_time = between(*THINK_TIME)
    connection_timeout = 5.0
    network_timeout = 10.0
    tasks = WEIGHTS  # type: ignore[assignment]  # Locust accepts a {callable: weight} table

    user_id: str
    actions_left: int
    api_key: str
    page: Callable[[], dict[str, int]]

    def on_start(self) -> None:
        options = self.environment.parsed_options
        workload = getattr(options, "workload", "site")
        keys = [key.strip() for key in getattr(options, "client_keys", "").split(",")]
        self.page = WORKLOADS[workload]
        self.api_key = random.choice([key for key in keys if key] or ["dev-client-key"])
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
        validate: Validator | None = None,
    ) -> Body | None:
        """One request; the JSON body when it is the expected answer, else None (and failed)."""
        if params:
            path = f"{path}?{urlencode(params)}"
        headers = {"X-API-Key": self.api_key}
        with self.client.request(
            method, path, name=name, json=body, headers=headers, catch_response=True
        ) as response:
            status = response.status_code or 0
            if status != expected:
                response.failure(self._unexpected(status, response))
                return None
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                response.failure(f"HTTP {status} with a body that is not a JSON object")
                return None
            if validate is not None and (problem := validate(data)):
                response.failure(f"HTTP {status} with a wrong body: {problem}")
                return None
            response.success()
            return data

    @staticmethod
    def _unexpected(status: int, response: Any) -> str:
        if status == 0:
            return f"connection error: {type(response.error).__name__}"
        if status >= 500:
            return SERVER_ERROR.format(status=status, title=_problem_title(response))
        return f"HTTP {status} (unexpected): {_problem_title(response)}"

    def _list(self, path: str, name: str, kind: str, category: str | None = None) -> Body | None:
        params: dict[str, Any] = self.page()
        if category:
            params["category"] = category
        body = self.call("GET", path, name, 200, params=params, validate=check_list)
        if body is not None:
            OUTCOMES.record(kind, body["strategy"], body.get("fallback_reason"))
        return body

    def recommendations(
        self, user_id: str, *, kind: str, category: str | None = None
    ) -> Body | None:
        path = f"/v1/users/{user_id}/recommendations"
        return self._list(path, USER_RECOMMENDATIONS, kind, category)

    def similar(self, item_id: str) -> Body | None:
        return self._list(f"/v1/items/{item_id}/similar", SIMILAR_ITEMS, "similar")

    def popular(self, category: str | None = None) -> Body | None:
        return self._list(POPULAR_ITEMS, POPULAR_ITEMS, "popular", category)

    def interact(self, user_id: str, listing: Body, event_type: str) -> None:
        """A click or rating on an item of a list just received, with its recommendation_id."""
        items = listing["items"]
        if not items:
            return
        weights = [1 / (1 + position) for position in range(len(items))]
        item = random.choices(items, weights=weights)[0]
        event: Body = {
            "user_id": user_id,
            "item_id": item["item_id"],
            "type": event_type,
            "recommendation_id": listing["recommendation_id"],
        }
        if event_type == "rating":
            event["value"] = RATING()

        def one_counted(answer: Body) -> str | None:
            counted = answer.get("accepted", 0) + answer.get("duplicates", 0)
            return None if counted == 1 else "accepted + duplicates is not 1"

        self.call("POST", EVENTS, EVENTS, 202, body={"events": [event]}, validate=one_counted)
