"""`make run` (scripts/run.py) stops at once, naming the ports, when one of its services' ports
is taken: what holds it (a `make run` still up, say) would otherwise answer the new service's
health check, and the service itself would fail to bind and be restarted until it gave up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from recsys_shared.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_refuses_a_taken_port_before_starting_anything() -> None:
    port = free_port()
    while not all(1024 < port + offset < 65536 for offset in (101, 102, 201, 301)):
        port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port + 201))  # the feature-store's port
        holder.listen()
        result = subprocess.run(
            [sys.executable, "scripts/run.py"],
            cwd=ROOT,
            env={**os.environ, "PORT": str(port), "DEMO": "0"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert f"ports [{port + 201}] on 127.0.0.1 are in use" in result.stderr
    assert "starting redis-server" not in result.stdout + result.stderr
