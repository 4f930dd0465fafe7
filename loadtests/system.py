"""The system under test: used as it is when it answers, else started here (local default only).

When nothing answers at ``HOST/healthz`` and HOST is ``http://127.0.0.1:8000``, ``make setup``
runs and ``scripts/run.py`` (what ``make run`` runs) starts in the background, its output in
``REPORTS/system.log``; it is awaited until user 1 gets personalised recommendations and
stopped at the end. A system that was already running is used as it is and left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from api_client import Api

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST = "http://127.0.0.1:8000"


class NotRun(Exception):
    """The load test could not be carried out (as opposed to: it ran and missed an SLO)."""


def say(message: str) -> None:
    print(f"loadtest | {message}", flush=True)


def is_local_default(host: str) -> bool:
    parts = urlsplit(host)
    local = parts.hostname in {"127.0.0.1", "localhost"}
    return parts.scheme == "http" and local and (parts.port or 80) == 8000


class System:
    """A context manager: on enter the system at ``host`` is ready, on exit it is as it was."""

    def __init__(
        self,
        host: str,
        reports: Path,
        ready_timeout: float,
        key: str,
        api_keys: str,
        keys_check: Callable[[], None] = lambda: None,
    ) -> None:
        """``keys_check`` raises :class:`NotRun` when the system refuses the client keys: run
        at once on a system already running, before the wait for it to be ready (up to
        ``ready_timeout``), which a refused key would otherwise sit through."""
        self.host = host
        self.keys_check = keys_check
        self.api = Api(host, key, timeout=5)
        self.reports = reports
        self.ready_timeout = ready_timeout
        self.api_keys = api_keys  # API_KEYS of a system started here, unless API_KEYS is set
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = reports / "system.log"
        self._log: TextIO | None = None

    def __enter__(self) -> System:
        if self.api.get("/healthz")[0] == 200:
            say(f"using the system already running at {self.host} (it is left running)")
            self.keys_check()
        elif is_local_default(self.host):
            self.start()
        else:
            raise NotRun(
                f"nothing answers at {self.host}/healthz, and it is not the local "
                f"default ({DEFAULT_HOST}) that this script could start"
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        say("nothing answers at the gateway: starting the system (make setup, scripts/run.py)")
        subprocess.run(["make", "--no-print-directory", "setup"], cwd=ROOT, check=True)
        self.reports.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w", encoding="utf-8")
        environment = {"PORT": "8000", "PYTHONUNBUFFERED": "1"}
        environment["API_KEYS"] = os.environ.get("API_KEYS") or self.api_keys  # yours first
        self.process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "python"), "scripts/run.py"],
            cwd=ROOT,
            env={**os.environ, **environment},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C reaches it only through stop()
        )
        say(f"system started (pid {self.process.pid}), its output in {self.log_path}")

    def wait_ready(self) -> None:
        say("waiting until user 1 gets personalised recommendations…")
        started = time.monotonic()
        next_note = started + 30
        while self.api.serving_version() is None:
            if self.process is not None and self.process.poll() is not None:
                raise NotRun(
                    f"the system exited (status {self.process.returncode}) before it was "
                    f"ready:\n{self._tail()}"
                )
            now = time.monotonic()
            if now - started > self.ready_timeout:
                raise NotRun(
                    f"{self.host} did not serve personalised recommendations to user 1 within "
                    f"{self.ready_timeout:.0f} s (READY_TIMEOUT); is the MovieLens demo loaded, "
                    f"and does it accept the client key?\n{self._tail()}"
                )
            if now >= next_note:
                say(
                    f"still waiting ({now - started:.0f} s): loading the demo and training the "
                    "first model takes a few minutes on a fresh .data"
                )
                next_note = now + 30
            time.sleep(1)
        say(f"ready after {time.monotonic() - started:.0f} s")

    def _tail(self, lines: int = 25) -> str:
        if self.process is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Ctrl-C to the supervisor we started (it stops its children), then harder if needed."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            say(f"stopping the system we started (SIGINT to pid {process.pid})…")
            for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 15)):
                with suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session, started above
                process.wait(timeout=10)
            say(f"system stopped (status {process.returncode})")
        if self._log is not None:
            self._log.close()
            self._log = None
