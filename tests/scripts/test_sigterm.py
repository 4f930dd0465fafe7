"""A `kill` (SIGTERM) of a script that `make` runs ends it as Ctrl-C does: what it started
(Redis servers, services, Locust) runs in sessions of its own and is stopped by the script's
`with` blocks and `finally` clauses, never left behind."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
#: How a script handles SIGTERM: the shared helper, or a handler of its own (`make run`'s
#: supervisor; the load test, whose virtualenv has no recsys_shared).
HANDLES_SIGTERM = re.compile(r"interrupt_on_sigterm\(\)|signal\.signal\(signal\.SIGTERM")
STARTS_REDIS_THEN_WAITS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from recsys_shared.processes import RedisServer
    from recsys_shared.testing import interrupt_on_sigterm

    interrupt_on_sigterm()
    server = RedisServer(Path(sys.argv[1]), durable=False)
    try:
        server.start()
        print(server.port, flush=True)
        time.sleep(60)
    finally:
        server.stop()
    """
)


def _make_scripts() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    found = sorted(set(re.findall(r"\b((?:scripts|loadtests)/\w+\.py)\b", makefile)))
    assert len(found) >= 8, found  # the Makefile's targets, not a pattern gone wrong
    return found


@pytest.mark.parametrize("script", _make_scripts())
def test_every_script_make_runs_handles_sigterm(script: str) -> None:
    assert HANDLES_SIGTERM.search((ROOT / script).read_text()), f"{script} ignores SIGTERM"


def test_sigterm_unwinds_the_script_so_what_it_started_is_stopped(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", STARTS_REDIS_THEN_WAITS, str(tmp_path / "redis")],
        stdout=subprocess.PIPE,
        text=True,
    ) as script:
        assert script.stdout is not None
        port = int(script.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # its Redis is up

        script.send_signal(signal.SIGTERM)

        assert script.wait(timeout=30) != 0
    try:
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # and stopped on the way out
    finally:  # a Redis left behind by a failure is not left for the rest of the suite
        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis(port=port).shutdown(nosave=True)
