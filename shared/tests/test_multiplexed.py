"""The read path's multiplexed Redis client, against real redis-servers (one of them paused,
stopped and restarted by the tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.exceptions

from recsys_shared.multiplexed import Endpoint, MultiplexedRedis
from recsys_shared.processes import RedisServer, free_port

# Busy for about 0.3 s inside Redis: a command that is certainly still running when a test
# gives up on it.
SLOW_SCRIPT = """
local start = redis.call('TIME')
local elapsed = 0
while elapsed < 300000 do
  local now = redis.call('TIME')
  elapsed = (now[1] - start[1]) * 1000000 + (now[2] - start[2])
end
return 'slow'
"""


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[MultiplexedRedis]:
    multiplexed = MultiplexedRedis(redis_url, timeout=2.0)
    yield multiplexed
    await multiplexed.aclose()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to pause, stop and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    if server.process is not None and server.process.running():
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


async def test_replies_are_decoded_as_redis_py_decodes_them(client: MultiplexedRedis) -> None:
    assert await client.execute("SET", "k", "välue") == "OK"
    assert await client.execute("GET", "k") == "välue"
    assert await client.execute("GET", "missing") is None
    assert await client.execute("INCR", "n") == 1
    await client.execute("HSET", "h", "a", 1, "b", 2.5)
    assert await client.execute("HGETALL", "h") == ["a", "1", "b", "2.5"]


async def test_concurrent_commands_each_get_their_own_reply(client: MultiplexedRedis) -> None:
    async def round_trip(index: int) -> str:
        await client.execute("SET", f"key:{index}", f"value:{index}")
        value: str = await client.execute("GET", f"key:{index}")
        return value

    values = await asyncio.gather(*(round_trip(index) for index in range(500)))

    assert values == [f"value:{index}" for index in range(500)]


async def test_commands_are_sent_before_they_are_awaited(client: MultiplexedRedis) -> None:
    await client.ping()  # connected, so the next calls write at once
    first = client.execute("SET", "order", "first")
    second = client.execute("GET", "order")

    assert await second == "first"
    assert await first == "OK"


async def test_an_error_reply_in_a_batch_is_raised_after_every_reply(
    client: MultiplexedRedis,
) -> None:
    await client.execute("HSET", "a-hash", "f", "v")

    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await client.execute_many([("SET", "x", "1"), ("INCR", "a-hash"), ("SET", "y", "2")])

    # The commands around the failing one ran, and the connection is still in step.
    assert await client.execute_many([("GET", "x"), ("GET", "y")]) == ["1", "2"]


async def test_error_replies_are_redis_py_exception_classes(own_server: RedisServer) -> None:
    client = MultiplexedRedis(own_server.url)
    await client.execute("CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            await client.execute("SET", "k", "v" * 1000)
        with pytest.raises(redis.exceptions.NoScriptError):
            await client.execute("EVALSHA", "0" * 40, 0)
    finally:
        await client.execute("CONFIG", "SET", "maxmemory", "0")
        await client.aclose()


async def test_a_script_is_loaded_again_after_redis_forgets_it(
    client: MultiplexedRedis,
) -> None:
    script = client.script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["counter"], args=[2]) == 2

    await client.execute("SCRIPT", "FLUSH")

    assert await script(keys=["counter"], args=[3]) == 5


async def test_a_caller_that_gives_up_does_not_shift_later_replies(
    client: MultiplexedRedis,
) -> None:
    await client.execute("SET", "after", "mine")
    slow = asyncio.ensure_future(client.execute("EVAL", SLOW_SCRIPT, 0))
    await asyncio.sleep(0.05)
    slow.cancel()

    # Queued behind the slow script, whose reply still arrives and must not be taken as this.
    assert await client.execute("GET", "after") == "mine"


async def test_a_late_reply_is_a_timeout_and_the_next_command_reconnects(
    own_server: RedisServer,
) -> None:
    client = MultiplexedRedis(own_server.url, timeout=0.3)
    assert own_server.process is not None
    try:
        assert await client.ping()
        os.kill(own_server.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await client.execute("GET", "k")
        assert time.monotonic() - started < 2.0
        os.kill(own_server.process.pid, signal.SIGCONT)

        assert await client.execute("SET", "k", "v") == "OK"
    finally:
        os.kill(own_server.process.pid, signal.SIGCONT)
        await client.aclose()


async def test_a_restarted_redis_is_reconnected_to(own_server: RedisServer) -> None:
    client = MultiplexedRedis(own_server.url, timeout=1.0)
    try:
        await client.execute("SET", "k", "before")
        own_server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.execute("GET", "k")

        own_server.start()

        assert await client.execute("GET", "k") == "before"  # from the AOF
    finally:
        await client.aclose()


async def test_nothing_listening_is_a_connection_error() -> None:
    client = MultiplexedRedis(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)

    with pytest.raises(redis.exceptions.ConnectionError, match="Cannot connect"):
        await client.execute("PING")
    await client.aclose()


async def test_credentials_and_database_from_the_url(own_server: RedisServer) -> None:
    admin = redis.Redis(host=own_server.host, port=own_server.port, decode_responses=True)
    admin.acl_setuser("reader", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    client = MultiplexedRedis(f"redis://reader:s3cret@{own_server.host}:{own_server.port}/3")
    try:
        await client.execute("SET", "where", "db3")
        in_db3 = redis.Redis(host=own_server.host, port=own_server.port, db=3)
        assert in_db3.get("where") == b"db3"
        in_db3.close()

        wrong = MultiplexedRedis(f"redis://reader:nope@{own_server.host}:{own_server.port}/0")
        with pytest.raises(redis.exceptions.AuthenticationError):
            await wrong.execute("PING")
        await wrong.aclose()
    finally:
        admin.close()
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6380/2", Endpoint(host="localhost", port=6380, db=2)),
        ("redis://:p%40ss@h/0", Endpoint(host="h", password="p@ss")),
        ("redis://user:pw@h:1", Endpoint(host="h", port=1, username="user", password="pw")),
        ("rediss://h", Endpoint(host="h", tls=True)),
        ("unix:///run/redis.sock?db=4", Endpoint(path="/run/redis.sock", db=4)),
    ],
)
def test_urls_are_read_as_redis_py_reads_them(url: str, expected: Endpoint) -> None:
    assert Endpoint.from_url(url) == expected


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="scheme 'http'"):
        Endpoint.from_url("http://localhost:6379")
