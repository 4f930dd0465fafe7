"""Fixtures for the gateway's tests: the real app on a real Redis, its neighbours faked at the
transport.

The app is built with ``create_app`` and run by Starlette's ``TestClient`` (which runs the
lifespan). The lifespan's state (one ``GatewayState``) is kept by the ``TestClient`` in
``client.app_state``; requests get a shallow copy of it, so the objects inside are the ones every
request uses. After
start-up the transports the recommender and feature-store clients hold are swapped for fakes:
an ``httpx.MockTransport`` for the feature-store, and :class:`MockUpstream` (the same handlers,
behind the recommender client's ``Upstream`` interface) for the recommenders. The gateway's
own code (round robin, breakers, error mapping) runs unchanged, only the network is fake.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import redis
from starlette.exceptions import StarletteDeprecationWarning

from gateway.clients import BATCH_TARGET
from gateway.config import Settings
from gateway.deps import GatewayState
from gateway.main import create_app
from recsys_shared import keys
from recsys_shared.fastpath.http_client import ConnectFailed, HttpResponse, Origin, RequestTimeout
from recsys_shared.web.state import stored_state

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


class MockUpstream:
    """The recommenders' transport, faked like ``httpx.MockTransport``: each GET is handed to
    ``service`` as an ``httpx.Request``; its ``httpx.Response`` comes back as the real client's
    response, and an httpx error it raises as the real client's error.

    A batch (``POST /batch/recommendations``) is answered as a recommender answers it, from the
    same handler: each list asked is handed to ``service`` as the one-user GET the recommender
    also serves (marked with an ``x-batch-size`` header), and the answers come back as NDJSON;
    one error fails the whole batch, as it would in the recommender. ``batches`` records the
    batch bodies; ``batch_route=False`` makes the replica one that predates batches (404).
    Any other POST (``/models/{version}/prepare``) is handed to ``service`` as it is."""

    def __init__(self, service: FakeService) -> None:
        self.service = service
        self.batches: list[dict[str, Any]] = []
        self.batch_route = True

    async def get(
        self, origin: Origin, target: str, headers: Iterable[tuple[str, str]] = ()
    ) -> HttpResponse:
        request = httpx.Request("GET", f"http://{origin.host}:{origin.port}{target}")
        return self._send(request, headers)

    def _send(self, request: httpx.Request, headers: Iterable[tuple[str, str]]) -> HttpResponse:
        request.headers.update(dict(headers))
        try:
            response = self.service(request)
        except httpx.TimeoutException as error:
            raise RequestTimeout(str(error)) from error
        except httpx.HTTPError as error:
            raise ConnectFailed(str(error)) from error
        return HttpResponse(response.status_code, response.read())

    async def post(
        self,
        origin: Origin,
        target: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> HttpResponse:
        if target != BATCH_TARGET:
            url = f"http://{origin.host}:{origin.port}{target}"
            request = httpx.Request("POST", url, content=body)
            return self._send(request, [*headers, ("content-type", content_type)])
        if not self.batch_route:
            return HttpResponse(404, b'{"detail":"Not Found"}')
        batch = json.loads(body)
        self.batches.append(batch)
        asked = batch["requests"]
        lists = []
        for one in asked:
            query = {name: value for name, value in one.items() if name != "user_id"}
            query = {
                name: str(value).lower() if isinstance(value, bool) else value
                for name, value in query.items()
                if value is not None
            }
            path = f"/users/{quote(one['user_id'], safe='')}/recommendations"
            sent = [*headers, ("x-batch-size", str(len(asked)))]
            response = await self.get(origin, f"{path}?{urlencode(query)}", sent)
            if response.status != 200:
                return response
            lists.append(response.body)
        return HttpResponse(200, b"\n".join(lists))


@dataclass
class Gateway:
    client: TestClient
    state: GatewayState
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
            state = stored_state(client.app_state, GatewayState)
            recommender, feature_store = FakeService(), FakeService()
            feature_store_http = httpx.AsyncClient(transport=httpx.MockTransport(feature_store))
            state.reads.recommenders.http = MockUpstream(recommender)
            state.feature_store.http = feature_store_http

            def close_fakes() -> None:
                assert client.portal is not None
                client.portal.call(feature_store_http.aclose)

            # Callbacks run last in, first out: the fakes close while the portal still runs.
            stack.callback(close_fakes)
            return Gateway(client, state, recommender, feature_store, settings)

        yield start


@pytest.fixture
def upstream() -> MockUpstream:
    """The recommenders' fake transport on its own (no gateway), for the recommender client:
    set ``upstream.service.handler``."""
    return MockUpstream(FakeService())


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
    """Writes features the way the feature-store lays them out (see ``recsys_shared.keys``);
    users' state in their partition of ``partitions`` (the gateway's ``EVENT_PARTITIONS``)."""

    redis: redis.Redis
    partitions: keys.Partitions = field(default_factory=lambda: keys.Partitions(1))

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
                keys.ITEM_TITLE: title or f"Title of {item_id}",
                keys.ITEM_CATEGORIES: json.dumps(categories or []),
                keys.ITEM_AVAILABLE: "1" if available else "0",
                keys.ITEM_UPDATED_AT: (updated_at or datetime.now(UTC)).isoformat(),
            },
        )
        self.redis.sadd(keys.ITEMS, item_id)
        self.redis.incr(keys.CATALOGUE_VERSION)  # as the feature-store does with every write

    def popular(self, scores: dict[str, float], *, category: str | None = None) -> None:
        self.redis.zadd(keys.popular_in(category) if category else keys.POPULAR, scores)

    def seen(self, user_id: str, items: dict[str, float]) -> None:
        self.redis.hset(self.partitions.of(user_id).user_items(user_id), mapping=items)


@pytest.fixture
def catalogue(store: redis.Redis) -> Catalogue:
    return Catalogue(store)
