"""A small HTTP/1.1 client for calls between services on the hot path.

httpx costs about 300 µs of CPU per request in its client layer alone on the reference machine,
and its pool scans every pooled connection on each request (2 ms with 32 in flight); aiohttp
costs about 125 µs. This client does what the gateway's calls to the recommenders need and no
more: GET and POST, keep-alive connections per origin, a bound on connections, a timeout per
request, and the response parsed by httptools (the parser uvicorn serves with): about 26 µs.

Error classes say what happened, for breakers and metrics: :class:`ConnectFailed` (nothing was
sent), :class:`RequestTimeout`, :class:`ProtocolFailure` (the peer closed or answered garbage).
A request that finds its reused connection closed by the server before any byte of a response
arrived is sent again once on a new connection, as urllib3 and httpcore do: keep-alive
connections that the server timed out are a normal event, not a failure.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

#: Idle connections older than this are not reused: uvicorn closes them after 5 s, and a
#: request racing that close would have to be sent twice.
IDLE_SECONDS = 4.0
#: A connection is retired after this long, busy or not: behind one Kubernetes Service,
#: kube-proxy balances connections, not requests, so a replica that starts later (a scale-up,
#: a rolling update) only gets traffic on connections opened after it is ready.
MAX_AGE_SECONDS = 30.0


class HttpClientError(Exception):
    """Base of the client's failures."""


class ConnectFailed(HttpClientError):
    """The connection could not be made; the request was not sent."""


class RequestTimeout(HttpClientError):
    """No whole response within the timeout."""


class ProtocolFailure(HttpClientError):
    """The peer closed the connection or sent something that is not an HTTP response."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme-less ``host:port`` of a plain-HTTP service, parsed once from its base URL."""

    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Internal service URL '{url}' is not an http://host[:port] URL.")
        return cls(parts.hostname, parts.port or 80)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.opened_at = asyncio.get_running_loop().time()
        self._body: list[bytes] = []
        self._response: asyncio.Future[HttpResponse] | None = None
        self._received_any = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ProtocolFailure(f"Invalid HTTP response: {error}."))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ProtocolFailure(f"Connection closed by the peer ({exc or 'EOF'})."))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response, self._response = self._response, None
        if not self.parser.should_keep_alive():
            self.close()
        if response is not None and not response.done():
            response.set_result(HttpResponse(self.parser.get_status_code(), b"".join(self._body)))

    def request(self, message: bytes) -> asyncio.Future[HttpResponse]:
        if self.transport is None or self._response is not None:
            raise ProtocolFailure("The connection is not ready for a request.")
        self._body = []
        self._received_any = False
        self._response = asyncio.get_running_loop().create_future()
        self.transport.write(message)
        return self._response

    @property
    def answered_nothing(self) -> bool:
        return not self._received_any

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: HttpClientError) -> None:
        self.closed = True
        response, self._response = self._response, None
        if response is not None and not response.done():
            response.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """Idle connections of one origin, newest first, and a bound on how many may be open."""

    def __init__(self, origin: Origin, limit: int, max_age_seconds: float) -> None:
        self.origin = origin
        self.max_age_seconds = max_age_seconds
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(limit)

    def reusable(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection, self.origin.host, self.origin.port
            )
        except OSError as error:
            raise ConnectFailed(
                f"Cannot connect to {self.origin.host}:{self.origin.port}: {error}."
            ) from error
        return connection

    def release(self, connection: _Connection) -> None:
        now = asyncio.get_running_loop().time()
        if now - connection.opened_at >= self.max_age_seconds:
            connection.close()
        elif not connection.closed:
            connection.idle_since = now
            self.idle.append(connection)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class HttpClient:
    """Requests to a few known origins over pooled keep-alive connections."""

    def __init__(
        self,
        *,
        timeout: float,
        max_connections_per_origin: int = 100,
        max_age_seconds: float = MAX_AGE_SECONDS,
    ) -> None:
        self.timeout = timeout
        self.limit = max_connections_per_origin
        self.max_age_seconds = max_age_seconds
        self._pools: dict[Origin, _Pool] = {}

    async def get(
        self, origin: Origin, target: str, headers: Iterable[tuple[str, str]] = ()
    ) -> HttpResponse:
        """``GET target`` (path and query, already percent-encoded) on ``origin``."""
        return await self._request(origin, _request_head("GET", origin, target, headers))

    async def post(
        self,
        origin: Origin,
        target: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> HttpResponse:
        """``POST target`` with ``body``. Sent again on a fresh connection only when the server
        had closed the reused one before answering anything, as a GET is: callers post only
        what is safe to repeat (the recommenders' batch reads)."""
        framing = (("Content-Type", content_type), ("Content-Length", str(len(body))))
        head = _request_head("POST", origin, target, (*framing, *headers))
        return await self._request(origin, head + body)

    async def _request(self, origin: Origin, message: bytes) -> HttpResponse:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(origin, self.limit, self.max_age_seconds)
        try:
            async with asyncio.timeout(self.timeout), pool.slots:
                return await self._exchange(pool, message)
        except TimeoutError:
            raise RequestTimeout(
                f"No response from {origin.host}:{origin.port} within {self.timeout:g} s."
            ) from None

    async def _exchange(self, pool: _Pool, message: bytes) -> HttpResponse:
        connection = pool.reusable()
        if connection is not None:
            try:
                return await self._send(pool, connection, message)
            except ProtocolFailure:
                if not connection.answered_nothing:
                    raise
                # The server closed the idle connection as the request went out: resend once.
        return await self._send(pool, await pool.connect(), message)

    async def _send(self, pool: _Pool, connection: _Connection, message: bytes) -> HttpResponse:
        try:
            response = await connection.request(message)
        except BaseException:
            connection.close()  # mid-response (timeout, cancel): not reusable
            raise
        pool.release(connection)
        return response

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _request_head(
    method: str, origin: Origin, target: str, headers: Iterable[tuple[str, str]]
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host}:{origin.port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if any("\r" in line or "\n" in line for line in lines):
        # A target, name or value with a line break would smuggle in a header of its own.
        raise ValueError("A request target or header holds a line break.")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
