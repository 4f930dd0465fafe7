"""The internal HTTP client against a real socket peer whose behaviour each test sets: keep-alive
reuse, a server that closes idle connections, chunked bodies, silence, garbage, refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from recsys_shared.fastpath.http_client import (
    ConnectFailed,
    HttpClient,
    Origin,
    ProtocolFailure,
    RequestTimeout,
)
from recsys_shared.processes import free_port

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


def _response(body: bytes, *, status: int = 200, close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    head += "Connection: close\r\n" if close else ""
    return head.encode() + b"\r\n" + body


async def echo_target(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
    """Answers with the request line; keeps the connection."""
    writer.write(_response(head.split(b"\r\n", 1)[0]))
    return True


@dataclass
class Peer:
    """A TCP server on a free loopback port that reads request heads and runs ``behaviour``."""

    behaviour: Behaviour = echo_target
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    origin: Origin = field(default_factory=lambda: Origin("127.0.0.1", free_port()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                keep = await self.behaviour(reader, writer, head)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        writer.close()

    def close_idle_connections(self) -> None:
        for writer in self.writers:
            writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    state = Peer()
    server = await asyncio.start_server(state._serve, state.origin.host, state.origin.port)
    yield state
    server.close()
    state.close_idle_connections()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(timeout=1.0)
    yield http
    await http.aclose()


async def test_a_get_carries_the_target_and_headers(peer: Peer, client: HttpClient) -> None:
    response = await client.get(peer.origin, "/users/u%201/x?k=3", [("X-Request-ID", "r1")])

    assert response.status == 200
    assert response.body == b"GET /users/u%201/x?k=3 HTTP/1.1"
    assert b"\r\nX-Request-ID: r1\r\n" in peer.heads[0]
    assert f"\r\nHost: 127.0.0.1:{peer.origin.port}\r\n".encode() in peer.heads[0]


async def echo_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
) -> bool:
    """Answers with the request line and the body its Content-Length framed, if any."""
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.startswith(b"Content-Length")
        ),
        0,
    )
    body = await reader.readexactly(length)
    writer.write(_response(head.split(b"\r\n", 1)[0] + b"|" + body))
    return True


async def test_a_post_carries_its_body_and_the_connection_stays_usable(
    peer: Peer, client: HttpClient
) -> None:
    peer.behaviour = echo_body

    posted = await client.post(
        peer.origin, "/batch", b'{"a":"\xc3\xa9"}', headers=[("X-Request-ID", "r2")]
    )
    after = await client.get(peer.origin, "/next")

    assert posted.body == b'POST /batch HTTP/1.1|{"a":"\xc3\xa9"}'
    assert b"\r\nContent-Type: application/json\r\n" in peer.heads[0]
    assert b"\r\nContent-Length: 10\r\n" in peer.heads[0]
    assert b"\r\nX-Request-ID: r2\r\n" in peer.heads[0]
    # The body was framed exactly: the next request on the same connection parses.
    assert after.body == b"GET /next HTTP/1.1|"
    assert peer.connections == 1


async def test_connections_are_kept_alive_and_reused(peer: Peer, client: HttpClient) -> None:
    for _ in range(5):
        await client.get(peer.origin, "/")
    await asyncio.gather(*(client.get(peer.origin, "/") for _ in range(10)))

    assert len(peer.heads) == 15
    assert peer.connections <= 10  # the five in a row shared one; concurrent ones add more


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    peer: Peer, client: HttpClient
) -> None:
    await client.get(peer.origin, "/first")
    peer.close_idle_connections()
    await asyncio.sleep(0.05)

    response = await client.get(peer.origin, "/second")

    assert response.body == b"GET /second HTTP/1.1"
    assert peer.connections == 2


async def test_a_close_racing_the_request_is_retried_once_on_a_new_connection(
    peer: Peer, client: HttpClient
) -> None:
    async def close_the_first_request(
        _: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> bool:
        if len(peer.heads) == 2:  # the second request: as if the keep-alive timer fired
            return False
        return await echo_target(_, writer, head)

    peer.behaviour = close_the_first_request
    await client.get(peer.origin, "/warm")

    response = await client.get(peer.origin, "/again")

    assert response.body == b"GET /again HTTP/1.1"
    assert len(peer.heads) == 3


async def test_connections_are_retired_at_their_maximum_age(peer: Peer) -> None:
    http = HttpClient(timeout=1.0, max_age_seconds=0.2)
    await http.get(peer.origin, "/")
    await http.get(peer.origin, "/")  # young enough: the same connection
    await asyncio.sleep(0.25)
    await http.get(peer.origin, "/")  # reused once more, then retired
    await http.get(peer.origin, "/")
    await http.aclose()

    assert len(peer.heads) == 4
    assert peer.connections == 2


async def test_connection_close_from_the_server_is_honoured(peer: Peer, client: HttpClient) -> None:
    async def close_after_answering(
        _: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes
    ) -> bool:
        writer.write(_response(b"bye", close=True))
        return False

    peer.behaviour = close_after_answering
    assert (await client.get(peer.origin, "/")).body == b"bye"
    assert (await client.get(peer.origin, "/")).body == b"bye"
    assert peer.connections == 2


async def test_a_chunked_body_is_joined(peer: Peer, client: HttpClient) -> None:
    async def chunked(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        return True

    peer.behaviour = chunked
    response = await client.get(peer.origin, "/")

    assert (response.status, response.body) == (503, b"abcde")


async def test_silence_is_a_timeout(peer: Peer) -> None:
    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        await asyncio.sleep(5)
        return False

    peer.behaviour = silent
    http = HttpClient(timeout=0.2)
    with pytest.raises(RequestTimeout):
        await http.get(peer.origin, "/")
    await http.aclose()


async def test_garbage_is_a_protocol_failure(peer: Peer, client: HttpClient) -> None:
    async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        return True

    peer.behaviour = garbage
    with pytest.raises(ProtocolFailure):
        await client.get(peer.origin, "/")


async def test_a_refused_connection_is_a_connect_failure(client: HttpClient) -> None:
    with pytest.raises(ConnectFailed):
        await client.get(Origin("127.0.0.1", free_port()), "/")


async def test_open_connections_per_origin_are_bounded(peer: Peer) -> None:
    async def slow(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        await asyncio.sleep(0.05)
        return await echo_target(_, writer, head)

    peer.behaviour = slow
    http = HttpClient(timeout=5.0, max_connections_per_origin=3)
    await asyncio.gather(*(http.get(peer.origin, "/") for _ in range(12)))
    await http.aclose()

    assert len(peer.heads) == 12
    assert peer.connections == 3


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb"])
async def test_a_header_value_cannot_break_the_request(
    peer: Peer, client: HttpClient, value: str
) -> None:
    with pytest.raises(ValueError, match="line break"):
        await client.get(peer.origin, "/", [("X-Request-ID", value)])


@pytest.mark.parametrize("url", ["https://x", "http://", "recommender:8000"])
def test_origins_are_plain_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Origin.from_url(url)


def test_an_origin_defaults_to_port_80() -> None:
    assert Origin.from_url("http://recommender/") == Origin("recommender", 80)
