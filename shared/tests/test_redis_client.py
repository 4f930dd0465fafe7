"""The services' Redis client on real servers: one node, a 3-master cluster, TLS with a private
CA; replies decoded, errors as the contract's, dropped connections retried."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recsys_shared import keys
from recsys_shared.errors import StoreError, StoreOutOfMemory, StoreUnavailable
from recsys_shared.processes import RedisServer
from recsys_shared.redis import LuaScript, RedisClient, connect, decoded
from recsys_shared.testing import DataTier, eventually
from recsys_shared.testing.tls import make_certificates, tls_arguments

COUNT_AND_READ = LuaScript(
    "redis.call('INCR', KEYS[1]); return {KEYS[1], redis.call('GET', KEYS[1]), ARGV[1]}",
    name="count_and_read",
)


@pytest.fixture
async def client(data_tier: DataTier) -> AsyncIterator[RedisClient]:
    redis_client = await connect(data_tier.url)
    yield redis_client
    await redis_client.aclose()


async def test_replies_come_back_decoded(client: RedisClient) -> None:
    key = keys.Partition(1).user_items("u")
    await client.execute("HSET", key, "a", 1.5, "b", 2)

    assert await client.execute("HGETALL", key) == {"a": "1.5", "b": "2"}
    assert await client.execute("HGET", key, "missing") is None
    assert await client.execute("SMEMBERS", "rs:none") == set()


def test_text_is_decoded_at_any_depth_and_other_values_kept() -> None:
    reply = [b"a", 1, None, 2.5, [b"b", [b"c"]], {b"k": [b"v", {b"n": b"m"}]}, {b"s"}]

    assert decoded(reply) == ["a", 1, None, 2.5, ["b", ["c"]], {"k": ["v", {"n": "m"}]}, {"s"}]
    assert decoded({b"x": b"1", b"y": [b"2", 3]}) == {"x": "1", "y": ["2", 3]}


async def test_a_batch_spans_slots_and_answers_in_order(client: RedisClient) -> None:
    names = [keys.Partition(n).stats for n in range(12)]
    await client.execute_many([("HSET", name, "n", index) for index, name in enumerate(names)])

    replies = await client.execute_many([("HGET", name, "n") for name in names])

    assert replies == [str(index) for index in range(12)]


async def test_a_transaction_on_one_slot_is_atomic(client: RedisClient) -> None:
    replies = await client.execute_many(
        [("SET", keys.MODEL_ACTIVE, 3), ("INCR", keys.MODEL_VERSION_SEQUENCE)], atomic=True
    )

    assert replies == ["OK", 1]


async def test_a_script_runs_on_its_first_keys_slot(client: RedisClient) -> None:
    partition = keys.Partition(5)
    first = await client.run(COUNT_AND_READ, keys=[partition.events + ":n"], args=["x"])
    second = await client.run(COUNT_AND_READ, keys=[partition.events + ":n"], args=["y"])

    assert first == [partition.events + ":n", "1", "x"]
    assert second[1:] == ["2", "y"]
    with pytest.raises(ValueError, match="at least one key"):
        await client.run(COUNT_AND_READ, keys=[])


async def test_every_primary_answers_and_scan_sees_every_key(
    client: RedisClient, data_tier: DataTier
) -> None:
    names = {keys.Partition(n).users for n in range(24)}
    await client.execute_many([("ZADD", name, 1, "u") for name in names])

    sizes = await client.on_primaries("DBSIZE")
    found = {name async for name in client.scan("rs:{p*}:users")}

    assert len(sizes) == (3 if data_tier.cluster else 1)
    assert sum(sizes) == len(names)
    assert found == names


async def test_errors_are_the_contracts(client: RedisClient) -> None:
    await client.execute("SET", "rs:text", "x")

    with pytest.raises(StoreError) as wrong:
        await client.execute("HGET", "rs:text", "f")

    assert wrong.value.code == "WRONGTYPE"
    assert wrong.value.status == 500


async def test_a_subscriber_gets_what_is_published(
    client: RedisClient, data_tier: DataTier
) -> None:
    subscriber = await connect(data_tier.url, channels=["rs:test:channel"])
    try:

        async def subscribed() -> object:
            # On a cluster a classic publish reaches every node: wait until one counts us.
            counts = await client.on_primaries("PUBSUB", "NUMSUB", "rs:test:channel")
            return any(count.get("rs:test:channel") for count in counts)

        await eventually(subscribed)
        await client.execute("PUBLISH", "rs:test:channel", "7")

        async with asyncio.timeout(5):
            assert await subscriber.next_message() == "7"
    finally:
        await subscriber.aclose()


async def test_a_dropped_connection_is_made_again_without_an_error(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = await connect(server.url, command_timeout=5)
    try:
        await client.execute("SET", "rs:k", "before")
        # Every client connection cut by the server: the next command reconnects by itself.
        await client.execute("CLIENT", "KILL", "TYPE", "normal")

        assert await client.execute("GET", "rs:k") == "before"
        server.restart()  # Redis itself goes and comes back (its AOF keeps the key)
        assert await client.execute("GET", "rs:k") == "before"
    finally:
        await client.aclose()
        server.stop()


async def test_a_silent_redis_is_a_timeout_then_answers_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = await connect(server.url, command_timeout=0.5)
    try:
        await client.ping()
        server.process.signal_group(signal.SIGSTOP)  # type: ignore[union-attr]
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await client.execute("GET", "rs:k")
        server.process.signal_group(signal.SIGCONT)  # type: ignore[union-attr]

        async def answers() -> bool:
            try:
                return await client.ping()
            except StoreUnavailable:
                return False

        await eventually(answers, within=10)
    finally:
        server.process.signal_group(signal.SIGCONT)  # type: ignore[union-attr]
        await client.aclose()
        server.stop()


async def test_at_maxmemory_writes_are_refused_as_out_of_memory(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    client = await connect(server.url)
    try:
        await client.execute("CONFIG", "SET", "maxmemory", "1")
        with pytest.raises(StoreOutOfMemory) as full:
            await client.execute("SET", "rs:k", "v")
        with pytest.raises(StoreOutOfMemory):
            await client.run(COUNT_AND_READ, keys=["rs:n"], args=["x"])
        assert await client.execute("GET", "rs:k") is None  # reads still work

        assert (full.value.status, full.value.retry_after) == (503, 5)
    finally:
        await client.execute("CONFIG", "SET", "maxmemory", "0")
        await client.aclose()
        server.stop()


async def test_tls_with_a_private_certificate_authority(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    port, arguments = tls_arguments(certificates)
    server = RedisServer(tmp_path / "redis", extra_args=arguments).start()
    trusted = await connect(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certificates.ca}")
    untrusting = await connect(f"rediss://127.0.0.1:{port}/0", command_timeout=1)
    try:
        await trusted.execute("SET", "rs:k", "over tls")

        assert await trusted.execute("GET", "rs:k") == "over tls"
        with pytest.raises(StoreUnavailable):  # the system's trust store does not know our CA
            await untrusting.execute("GET", "rs:k")
    finally:
        await trusted.aclose()
        await untrusting.aclose()
        server.stop()
