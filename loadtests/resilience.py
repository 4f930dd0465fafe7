"""The resilience scenario: a model swap and a killed recommender replica under steady load.

``ResilienceShape`` holds ``--users`` steady, like ``SteadyShape``, while a fault script runs
beside the visitors (a greenlet on the master, so faults happen once in a distributed run):

1. ``--baseline`` seconds of load (the reference p99);
2. model swap: ``POST /v1/models/retrain`` and wait for its task; if the gate published nothing
   new, or with ``--swap activate``, activate another version (re-activated after the run);
   then wait until user 1 is served by the new version;
3. 15 s later, SIGKILL to the recommender replica listening on the gateway's port + 101 (as
   ``make run`` lays the ports out), and wait until its supervisor has it ready again;
4. ``--cooldown`` seconds more of load, then the shape ends the run.

The faults it records are what the SLO verdict (``verdict.py``) checks and times the p99 by.
"""

# mypy: disallow-untyped-decorators=False
# (Locust's EventHook.add_listener is untyped; its documented form is the decorator.)

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped]
from api_client import Api
from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from shapes import SteadyShape, Tick

log = logging.getLogger("recsys.resilience")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: Seconds between the model swap and the replica kill.
BETWEEN_FAULTS = 15


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("recsys resilience (LOADTEST_SHAPE=resilience)")
    group.add_argument("--baseline", type=float, default=45, help="Seconds before the first fault")
    group.add_argument("--cooldown", type=float, default=30, help="Seconds after the last fault")
    group.add_argument("--swap", choices=("retrain", "activate"), default="retrain")
    group.add_argument("--admin-key", default="dev-admin-key", env_var="LOADTEST_ADMIN_KEY")


@dataclass
class Fault:
    """One fault injected: when (Unix seconds), what happened, and whether it recovered."""

    label: str
    start: float
    end: float
    outcome: str
    ok: bool


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        gevent.sleep(interval)
    return False


def listener_pid(port: int) -> int | None:
    """The process listening on ``port`` of this machine."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
            return int(connection.pid)
    return None


@dataclass
class FaultScript:
    """The faults of the scenario, in order, against the gateway at ``api.host``."""

    api: Api
    baseline: float
    cooldown: float
    swap: str
    started: float = field(default_factory=time.time)
    faults: list[Fault] = field(default_factory=list)

    @classmethod
    def from_environment(cls, environment: Environment) -> FaultScript:
        options = environment.parsed_options
        return cls(
            Api(environment.host or "", getattr(options, "admin_key", "dev-admin-key")),
            baseline=float(getattr(options, "baseline", 45)),
            cooldown=float(getattr(options, "cooldown", 30)),
            swap=getattr(options, "swap", "retrain"),
        )

    def log(self, message: str) -> None:
        log.info("%.0f s: %s", time.time() - self.started, message)

    def run(self) -> None:
        self.started = time.time()
        restore: int | None = None
        try:
            gevent.sleep(self.baseline)
            restore = self.swap_model()
            gevent.sleep(BETWEEN_FAULTS)
            self.faults.append(self.kill_replica())
            self.log(f"faults over; {self.cooldown:.0f} s more of steady load")
            gevent.sleep(self.cooldown)
        except Exception as error:  # reported as a failed fault: the verdict must see it
            self.faults.append(Fault("fault script", time.time(), time.time(), repr(error), False))
        finally:
            if restore is not None:
                status, _ = self.api.post(f"/v1/models/{restore}/activate")
                self.log(f"re-activated version {restore} as before the run: HTTP {status}")

    # ── fault 1: the model swap ───────────────────────────────────────────────────────────
    def swap_model(self) -> int | None:
        """Swap the served model; the version to re-activate after the run, if any."""
        start = time.time()
        status, active = self.api.get("/v1/models/active")
        before = active.get("version") if status == 200 and isinstance(active, dict) else None
        self.log(f"fault 1: model swap ({self.swap}), active version {before}")
        target = self.retrain(before) if self.swap == "retrain" else None
        restore = None
        if target is None:
            target, problem = self.activate_another(before)
            if target is None:
                self.faults.append(Fault("model swap", start, time.time(), problem, False))
                return None
            restore = before
        served = wait_until(lambda: self.api.serving_version() == target, 60)
        outcome = (
            f"version {before} -> {target} ({self.swap}), served after {time.time() - start:.0f} s"
            if served
            else f"version {target} not served within 60 s"
        )
        self.log(outcome)
        self.faults.append(Fault("model swap", start, time.time(), outcome, served))
        return restore

    def retrain(self, before: int | None) -> int | None:
        """A forced retrain; the version it published, or None when it published nothing new."""
        status, body = self.api.post("/v1/models/retrain", {"force": True})
        if status != 202 or not isinstance(body, dict):
            self.log(f"retrain refused: HTTP {status}")
            return None
        state: dict[str, Any] = {}

        def finished() -> bool:
            nonlocal state
            code, answer = self.api.get(f"/v1/tasks/{body['task_id']}")
            state = answer if code == 200 and isinstance(answer, dict) else {}
            return state.get("state") in {"SUCCESS", "FAILURE"}

        if not wait_until(finished, 600, interval=1):
            self.log(f"task {body['task_id']} unfinished after 600 s")
            return None
        result = state.get("result") or {}
        self.log(f"retrain {state.get('state')}: {result.get('status')}, {result.get('version')}")
        published = result.get("status") == "published" and result.get("version") != before
        return int(result["version"]) if published else None

    def activate_another(self, before: int | None) -> tuple[int | None, str]:
        """Activate the newest non-rejected version other than ``before``: (version, problem)."""
        code, models = self.api.get("/v1/models")
        others = [
            int(model["version"])
            for model in (models if code == 200 and isinstance(models, list) else [])
            if model.get("version") != before and model.get("status") != "rejected"
        ]
        if not others:
            return None, "no new version published and no other version to activate"
        self.log(f"POST /v1/models/{others[0]}/activate")
        code, _ = self.api.post(f"/v1/models/{others[0]}/activate")
        return (others[0], "") if code == 200 else (None, f"activate {others[0]}: HTTP {code}")

    # ── fault 2: the replica kill ─────────────────────────────────────────────────────────
    def kill_replica(self) -> Fault:
        start = time.time()
        parts = urlsplit(self.api.host)
        if parts.hostname not in LOOPBACK:
            return Fault("replica kill", start, start, f"{self.api.host} is not local", False)
        port = (parts.port or 80) + 101
        pid = listener_pid(port)
        command = " ".join(psutil.Process(pid).cmdline()) if pid else ""
        if pid is None or "recommender" not in command:
            problem = f"no recommender listens on port {port} ({command or 'nothing'})"
            return Fault("replica kill", start, time.time(), problem, False)
        self.log(f"fault 2: SIGKILL to the recommender replica on port {port} (pid {pid})")
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        replica = Api(f"http://127.0.0.1:{port}", timeout=2)

        def back() -> bool:
            new = listener_pid(port)
            return new not in (None, pid) and replica.get("/healthz")[0] == 200

        if not wait_until(back, 120):
            problem = "the replica did not come back within 120 s (no supervisor?)"
            return Fault("replica kill", start, time.time(), problem, False)
        healthy = time.time()
        wait_until(lambda: replica.get("/readyz")[0] == 200, 60)
        ready = time.time()
        outcome = (
            f"pid {pid} killed; back (healthz) after {healthy - killed:.1f} s, ready (model "
            f"loaded) after {ready - killed:.1f} s, pid {listener_pid(port)}"
        )
        self.log(outcome)
        return Fault("replica kill", start, ready, outcome, True)


class ResilienceShape(SteadyShape):
    """Steady load while the fault script runs; the run ends when the script does (or at
    ``--run-time``, a safety net)."""

    abstract = True  # until the locustfile picks it

    script: FaultScript | None = None
    greenlet: gevent.Greenlet | None = None

    def tick(self) -> Tick:
        if self.greenlet is None:
            assert self.runner is not None
            self.script = FaultScript.from_environment(self.runner.environment)
            self.greenlet = gevent.spawn(self.script.run)
        if self.greenlet.ready():
            return None
        return super().tick()
