"""Managed redis-server processes: persistence across restarts, free ports, waiting."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from recsys_shared.processes import (
    ManagedProcess,
    RedisServer,
    free_cluster_port,
    free_port,
    wait_until,
)


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path / "redis").start()
    yield started
    started.stop()


@pytest.mark.parametrize("hard", [False, True])
def test_data_survives_a_restart(server: RedisServer, hard: bool) -> None:
    client = _client(server)
    client.set("rs:test", "kept")
    client.xadd("rs:events", {"n": "1"})
    client.close()
    port = server.port

    server.restart(hard=hard)

    client = _client(server)
    try:
        assert server.port == port
        assert client.get("rs:test") == "kept"
        assert client.xlen("rs:events") == 1
    finally:
        client.close()


def test_stop_ends_the_process(server: RedisServer) -> None:
    assert server.ping()
    assert server.process is not None

    server.stop()

    assert not server.process.running()
    assert not server.ping()


def test_stop_waits_while_redis_refuses_to_shut_down(tmp_path: Path) -> None:
    """Redis answers SHUTDOWN with an error while it writes its first AOF (it would lose the
    data otherwise): stop asks again until it can, and Redis exits by itself, data kept."""
    server = RedisServer(tmp_path / "redis", durable=False).start()
    client = _client(server)
    client.mset({f"rs:k{n}": n for n in range(50)})
    client.config_set("rdb-key-save-delay", 20_000)  # µs a key: the first AOF takes a second
    client.config_set("appendonly", "yes")
    client.close()
    assert server.process is not None
    assert server.process.process is not None

    try:
        server.stop()
    finally:
        server.kill()  # whatever stop did, no redis-server outlives the test

    assert server.process.process.returncode == 0  # SHUTDOWN ended it, not a signal
    restarted = RedisServer(tmp_path / "redis", port=server.port, durable=True).start()
    try:
        client = _client(restarted)
        assert client.dbsize() == 50
        client.close()
    finally:
        restarted.stop()


def test_free_port_is_bindable() -> None:
    port = free_port()

    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port


def test_ports_handed_out_in_a_row_are_never_the_same() -> None:
    # Services bind theirs seconds later: a port handed out twice goes to whichever is first.
    ports = [free_port() for _ in range(300)]

    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize(
    ("worker", "ports", "cluster_ports"),
    [
        ("gw0", range(10_000, 15_000), range(20_000, 25_000)),
        ("gw1", range(15_000, 20_000), range(25_000, 30_000)),
    ],
)
def test_each_pytest_xdist_worker_draws_ports_from_its_own_share(
    monkeypatch: pytest.MonkeyPatch, worker: str, ports: range, cluster_ports: range
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)

    assert all(free_port() in ports for _ in range(100))
    node = free_cluster_port()
    assert node in cluster_ports
    for port in (node, node + 10_000):  # the node's port and its cluster bus port are free
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_wait_until_returns_once_true_and_times_out_otherwise() -> None:
    calls: list[int] = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    wait_until(third_time, timeout=5, interval=0.001)
    assert len(calls) == 3

    with pytest.raises(TimeoutError, match="never"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, what="never")


def test_a_process_that_exits_while_awaited_says_why(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    with log.open("ab") as output:
        process = ManagedProcess(
            "service",
            [sys.executable, "-c", "import sys; print('cannot bind the port'); sys.exit(3)"],
            health_url=f"http://127.0.0.1:{free_port()}/healthz",
            output=output,
        ).start()
        with pytest.raises(RuntimeError, match=r"exited with code 3(.|\n)*cannot bind the port"):
            process.wait_healthy(timeout=10)
