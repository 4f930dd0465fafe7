"""HTTP clients for the services behind the gateway: timeouts, safe retries, circuit breakers.

Reads from the recommenders go through ``recsys_shared.fastpath.http_client`` (they are the hot
path; httpx's client layer alone costs more than the rest of the request). Calls to the
feature-store are rare admin and catalogue writes and use one pooled ``httpx.AsyncClient``.
Both are created once in the lifespan. Reads are retried on another recommender replica (they
are idempotent). A feature-store call is sent once more only when the connection dropped
before an answer and the method is idempotent (GET, PUT, DELETE); any other failure is the
client's to retry (a retry storm is theirs to pace).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

import httpx
from opentelemetry import propagate
from pydantic import BaseModel, ValidationError

from gateway import metrics
from gateway.replicas import Replica, Replicas
from recsys_shared.errors import (
    InvalidInput,
    ModelUnavailable,
    NotFound,
    RecsysError,
    UnknownItem,
    UpstreamUnavailable,
)
from recsys_shared.fastpath.http_client import HttpClientError, HttpResponse, Origin
from recsys_shared.logging import REQUEST_ID_HEADER, request_id_var
from recsys_shared.schemas import (
    DeadLetters,
    ItemBatch,
    ItemIn,
    ItemPatch,
    RecommendationQuery,
    Recommendations,
    ReplayRequest,
    ReplayResult,
)

log = logging.getLogger(__name__)


#: The recommenders' route for several users' lists in one call (``UserListBatch``).
BATCH_TARGET = "/batch/recommendations"

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class BatchUnsupported(Exception):
    """The replica predates batches: ask it one list at a time."""


class Upstream(Protocol):
    """What the recommender client needs of HTTP: ``recsys_shared.fastpath.http_client.HttpClient``,
    or a fake transport in tests."""

    async def get(
        self, origin: Origin, target: str, headers: Iterable[tuple[str, str]] = ()
    ) -> HttpResponse: ...

    async def post(
        self,
        origin: Origin,
        target: str,
        body: bytes,
        *,
        content_type: str = ...,
        headers: Iterable[tuple[str, str]] = (),
    ) -> HttpResponse: ...


_DOT_SEGMENTS = frozenset({".", ".."})


def segment(identifier: str) -> str:
    """An id as one URL path segment: ids may hold '#', '?', '%' or non-ASCII characters, and
    may be '.' or '..', which a URL resolves away (``/users/..`` is ``/``): those are sent as
    ``%2E``, which the receiving service decodes back to the id."""
    if identifier in _DOT_SEGMENTS:
        return identifier.replace(".", "%2E")
    return quote(identifier, safe="")


def query_string(query: RecommendationQuery) -> str:
    """The query as the recommender's routes read it (what urlencode would write, cheaper)."""
    text = f"k={query.k}&offset={query.offset}&exclude_seen={str(query.exclude_seen).lower()}"
    return f"{text}&category={segment(query.category)}" if query.category else text


def _headers() -> dict[str, str]:
    request_id = request_id_var.get()
    headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
    # The trace context, when tracing is on (a no-op propagator otherwise): the service called
    # continues the caller's trace.
    propagate.inject(headers)
    return headers


@dataclass(frozen=True, slots=True)
class Answer:
    """A recommender's list, validated, and the JSON it came as (forwarded without
    re-serialising: the model forbids unknown fields, so the body holds nothing unchecked)."""

    recommendations: Recommendations
    body: bytes


class RecommenderClient:
    """Spreads reads over the replicas (``gateway.replicas``) round-robin, skipping those whose
    breaker is open."""

    def __init__(self, http: Upstream, replicas: Replicas) -> None:
        self.http = http
        self.replicas = replicas

    async def get(self, target: str) -> Answer:
        """``GET target`` (path and query) from the replicas in turn until one answers; at most
        one attempt per replica."""
        headers = _headers().items()

        async def send(replica: Replica) -> HttpResponse:
            return await self.http.get(replica.origin, target, headers)

        return await self._first_answer(send, _parse_recommendations)

    async def get_batch(self, body: bytes, count: int) -> list[Answer]:
        """``count`` users' lists for a ``UserListBatch`` body, in the order asked, as
        :meth:`get` does one. A batch is a read: safe to send again to another replica.
        Raises :class:`BatchUnsupported` if a replica has no batch route (an older version
        during a rolling update)."""
        headers = _headers().items()

        async def send(replica: Replica) -> HttpResponse:
            return await self.http.post(replica.origin, BATCH_TARGET, body, headers=headers)

        return await self._first_answer(send, lambda response: _parse_batch(response, count))

    async def prepare(self, version: int) -> None:
        """Have every replica that answers load ``version`` beside the active one (an
        experiment's variant); raises ``ModelUnavailable`` with the reason if one cannot, and
        ``UpstreamUnavailable`` if none answers. A replica that is down loads it when it
        next polls for experiments."""
        headers = list(_headers().items())
        answered = 0
        for replica in self.replicas.current:
            try:
                response = await self.http.post(
                    replica.origin, f"/models/{version}/prepare", b"", headers=headers
                )
            except HttpClientError as error:
                metrics.UPSTREAM_ERRORS.labels("recommender", type(error).__name__).inc()
                continue
            if response.status == 503 and b"model-unavailable" in response.body:
                raise ModelUnavailable(_detail(response.body, "The version cannot be loaded."))
            if response.status >= 400:
                metrics.UPSTREAM_ERRORS.labels("recommender", str(response.status)).inc()
                continue
            answered += 1
        if not answered:
            raise UpstreamUnavailable(f"No recommender replica could load version {version}.")

    async def _first_answer(
        self,
        send: Callable[[Replica], Awaitable[HttpResponse]],
        parse: Callable[[HttpResponse], T],
    ) -> T:
        last_error = "every replica's circuit is open"
        for replica in self.replicas.in_turn():
            breaker = replica.breaker
            if not breaker.allows():
                continue
            try:
                response = await send(replica)
            except HttpClientError as error:
                breaker.failed()
                last_error = f"{replica.url}: {type(error).__name__}"
                metrics.UPSTREAM_ERRORS.labels("recommender", type(error).__name__).inc()
                continue
            if response.status >= 500:
                breaker.failed()
                last_error = f"{replica.url}: HTTP {response.status}"
                metrics.UPSTREAM_ERRORS.labels("recommender", str(response.status)).inc()
                continue
            try:
                answer = parse(response)
            except UpstreamUnavailable:
                # A replica that answers garbage is as broken as one that does not answer.
                breaker.failed()
                last_error = f"{replica.url}: invalid body"
                metrics.UPSTREAM_ERRORS.labels("recommender", "invalid_body").inc()
                continue
            except RecsysError:  # a refusal (an unknown item): the replica works
                breaker.succeeded()
                raise
            breaker.succeeded()
            return answer
        raise UpstreamUnavailable(f"No recommender replica answered ({last_error}).")


def _parse_recommendations(response: HttpResponse) -> Answer:
    if response.status == 404:
        raise UnknownItem(_detail(response.body, "Not found."))
    if response.status >= 400:
        raise InvalidInput(_detail(response.body, "The recommender refused the request."))
    return _answer(response.body)


def _parse_batch(response: HttpResponse, count: int) -> list[Answer]:
    if response.status in (404, 405):
        raise BatchUnsupported(f"The recommender has no {BATCH_TARGET} route.")
    if response.status >= 400:
        raise InvalidInput(_detail(response.body, "The recommender refused the batch."))
    lines = response.body.split(b"\n")
    if len(lines) != count:
        raise UpstreamUnavailable(f"The recommender answered {len(lines)} lists for {count}.")
    return [_answer(line) for line in lines]


def _answer(body: bytes) -> Answer:
    try:
        return Answer(Recommendations.model_validate_json(body), body)
    except ValidationError as error:
        raise UpstreamUnavailable("The recommender answered with an invalid body.") from error


def _detail(body: bytes, default: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return default
    return str(parsed.get("detail", default)) if isinstance(parsed, dict) else default


def _parsed(model: type[M], response: httpx.Response) -> M:
    """A feature-store answer as ``model``: one that does not fit is the feature-store's
    failure (a 503 for the client), not the gateway's (a 500)."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        metrics.UPSTREAM_ERRORS.labels("feature-store", "invalid-body").inc()
        raise UpstreamUnavailable(
            f"The feature-store answered {response.request.url.path} with an invalid body."
        ) from error


#: Methods whose repeat does what one call does (RFC 9110): safe to resend after a drop.
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
#: The connection went away before an answer arrived.
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class FeatureStoreClient:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            response = await self._send(method, path, body)
        except httpx.HTTPError as error:
            metrics.UPSTREAM_ERRORS.labels("feature-store", type(error).__name__).inc()
            raise UpstreamUnavailable(
                f"The feature-store did not answer ({type(error).__name__})."
            ) from error
        if response.status_code >= 500:
            metrics.UPSTREAM_ERRORS.labels("feature-store", str(response.status_code)).inc()
            raise UpstreamUnavailable(f"The feature-store failed (HTTP {response.status_code}).")
        if response.status_code == 404:
            raise NotFound(_detail(response.content, "Not found."))
        if response.status_code >= 400:
            raise InvalidInput(_detail(response.content, "The feature-store refused the request."))
        return response

    async def _send(self, method: str, path: str, body: Any) -> httpx.Response:
        """One request; an idempotent one is sent once more when the connection dropped before
        an answer (a pooled connection the feature-store closed, a replica that restarted)."""
        url = f"{self.url}{path}"
        try:
            return await self.http.request(method, url, json=body, headers=_headers())
        except _DROPPED as error:
            if method not in _IDEMPOTENT:
                raise
            metrics.UPSTREAM_ERRORS.labels("feature-store", type(error).__name__).inc()
            return await self.http.request(method, url, json=body, headers=_headers())

    async def put_items(self, batch: ItemBatch) -> None:
        await self._call("PUT", "/items", batch.model_dump(mode="json"))

    async def put_item(self, item_id: str, item: ItemIn) -> None:
        await self._call("PUT", f"/items/{segment(item_id)}", item.model_dump(mode="json"))

    async def patch_item(self, item_id: str, patch: ItemPatch) -> None:
        try:
            await self._call(
                "PATCH",
                f"/items/{segment(item_id)}",
                patch.model_dump(mode="json", exclude_none=True),
            )
        except NotFound as error:
            raise UnknownItem(error.detail) from error

    async def dead_letters(self, *, reason: str | None, limit: int) -> DeadLetters:
        query = {"limit": str(limit), **({"reason": reason} if reason else {})}
        response = await self._call("GET", f"/dead-letters?{urlencode(query)}")
        return _parsed(DeadLetters, response)

    async def replay_dead_letters(self, request: ReplayRequest) -> ReplayResult:
        response = await self._call(
            "POST", "/dead-letters/replay", request.model_dump(mode="json", exclude_none=True)
        )
        return _parsed(ReplayResult, response)

    async def delete_item(self, item_id: str) -> None:
        try:
            await self._call("DELETE", f"/items/{segment(item_id)}")
        except NotFound as error:
            raise UnknownItem(error.detail) from error

    async def erase_user(self, user_id: str) -> None:
        await self._call("DELETE", f"/users/{segment(user_id)}")
