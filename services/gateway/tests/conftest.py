"""Fixtures for the gateway's tests: the real app on a real Redis, its neighbours faked at the
transport.

The app is built with ``create_app`` and run by Starlette's ``TestClient`` (which runs the
lifespan). The lifespan's state dict is kept by the ``TestClient`` in ``client.app_state``;
requests get a shallow copy of it, so the objects inside are the ones every request uses. After
start-up the ``httpx.AsyncClient`` that the recommender and feature-store clients hold is
swapped for one over an ``httpx.MockTransport``: the gateway's own code (round robin, breakers,
error mapping) runs unchanged, only the network is fake.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis
from starlette.exceptions import StarletteDeprecationWarning

from gateway.config import Settings
from gateway.main import create_app
from recsys_shared import keys

# Starlette 1.x prefers the httpx2 package for its TestClient and warns (an error here) when it
# falls back to httpx, which is what this workspace pins. The client works the same on both.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

CLIENT_KEY = "ck"
ADMIN_KEY = "ak"
RECOMMENDER_URLS = ["http://recommender-a", "http://recommender-b"]
FEATURE_STORE_URL = "http://feature-store"

Handler = Callable[[httpx.Request], httpx.Response]


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused (fake)", request=request)


@dataclass
class FakeService:
    """A service behind the gateway, as its transport sees it: every request is recorded, then
    answered by ``handler`` (replace it in a test; the default refuses the connection)."""

    handler: Handler = _unreachable
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def calls_to(self, host: str) -> int:
        return sum(1 for request in self.requests if request.url.host == host)


@dataclass
class Gateway:
    client: TestClient
    state: dict[str, Any]
    recommender: FakeService
    feature_store: FakeService
    settings: Settings


def build_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "api_keys": f"{CLIENT_KEY}:client,{ADMIN_KEY}:admin",
        "recommender_urls": RECOMMENDER_URLS,
        "feature_store_url": FEATURE_STORE_URL,
        "environment": "test",
        "log_json": False,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def client_headers() -> dict[str, str]:
    return {"X-API-Key": CLIENT_KEY}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def make_gateway(redis_url: str) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway with some settings overridden; stopped at the end of the test."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> Gateway:
            settings = build_settings(overrides.pop("redis_url", redis_url), **overrides)
            client = stack.enter_context(TestClient(create_app(settings)))
            state = client.app_state
            recommender, feature_store = FakeService(), FakeService()
            recommender_http = httpx.AsyncClient(transport=httpx.MockTransport(recommender))
            feature_store_http = httpx.AsyncClient(transport=httpx.MockTransport(feature_store))
            state["reads"].recommenders.http = recommender_http
            state["feature_store"].http = feature_store_http

            def close_fakes() -> None:
                assert client.portal is not None
                client.portal.call(recommender_http.aclose)
                client.portal.call(feature_store_http.aclose)

            # Callbacks run last in, first out: the fakes close while the portal still runs.
            stack.callback(close_fakes)
            return Gateway(client, state, recommender, feature_store, settings)

        yield start


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A blocking client on the gateway's Redis, to arrange and inspect what the gateway sees."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@dataclass
class Catalogue:
    """Writes features the way the feature-store lays them out (see ``recsys_shared.keys``)."""

    redis: redis.Redis

    def item(
        self,
        item_id: str,
        *,
        title: str | None = None,
        categories: list[str] | None = None,
        available: bool = True,
        updated_at: datetime | None = None,
    ) -> None:
        self.redis.hset(
            keys.item(item_id),
            mapping={
                "title": title or f"Title of {item_id}",
                "categories": json.dumps(categories or []),
                "available": "1" if available else "0",
                "updated_at": (updated_at or datetime.now(UTC)).isoformat(),
            },
        )
        self.redis.sadd(keys.ITEMS, item_id)

    def popular(self, scores: dict[str, float], *, category: str | None = None) -> None:
        self.redis.zadd(keys.popular_in(category) if category else keys.POPULAR, scores)

    def seen(self, user_id: str, items: dict[str, float]) -> None:
        self.redis.hset(keys.user_items(user_id), mapping=items)


@pytest.fixture
def catalogue(store: redis.Redis) -> Catalogue:
    return Catalogue(store)
