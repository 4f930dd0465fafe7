"""The load test's handling of a system already running: a client key it refuses stops the
run at once, not after the wait for the system to be ready (up to READY_TIMEOUT)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from run import check_keys
from system import NotRun, System


class _RefusingGateway(BaseHTTPRequestHandler):
    """Up (``/healthz``), but every API call refuses the key."""

    def do_GET(self) -> None:
        status = 200 if self.path == "/healthz" else 401
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def refusing_gateway() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_running_system_that_refuses_the_key_stops_the_run_at_once(
    refusing_gateway: str, tmp_path: Path
) -> None:
    keys = ["not-its-key"]
    system = System(
        refusing_gateway,
        tmp_path,
        ready_timeout=900,
        key=keys[0],
        api_keys="not-its-key:client",
        keys_check=lambda: check_keys(refusing_gateway, keys),
    )
    started = time.monotonic()
    refused = r"refuses the client key 'not-its-key' \(HTTP 401\)"
    with pytest.raises(NotRun, match=refused), system:
        pass
    assert time.monotonic() - started < 30  # not READY_TIMEOUT's 900 s
