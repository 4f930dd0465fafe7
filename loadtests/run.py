"""`make loadtest` and `make loadtest-resilience`: Locust against the system, a report, a verdict.

    python3 loadtests/run.py                        # the load test (make loadtest)
    python3 loadtests/run.py --scenario resilience  # faults under load (make loadtest-resilience)
    python3 loadtests/run.py --report-only reports/locust   # verdict of CSV already written

Runs with any Python 3.11: it first creates ``.venv-loadtest`` from the pinned
``loadtests/requirements.txt`` (with uv when it is on PATH, else venv and pip; again only when
that file changes) and re-executes itself there. Locust never enters the project's ``.venv``.

Settings, from the environment (``make loadtest USERS=40``) or the matching option:

    HOST          http://127.0.0.1:8000  the gateway under test
    DURATION      60                     seconds of load (the resilience run sizes its own)
    USERS         20                     simulated visitors (about 1.2 requests/s each)
    SPAWN_RATE    5                      visitors started per second
    SHAPE         steady                 steady | ramp | spike | none (loadtests/locustfile.py)
    WORKERS       0                      N > 0: a Locust master and N workers, on 127.0.0.1
    REPORTS       reports                where the CSV, HTML, PNG and summary go
    READY_TIMEOUT 900                    seconds to wait for the system to serve user 1
    SLO_FAILURE_RATIO 0.01, SLO_P95_MS 250, SLO_P99_MS 500   (loadtests/report.py)
    resilience: BASELINE 45, COOLDOWN 30 (seconds), SWAP retrain | activate

docs/loadtesting.md explains each, the journeys, the SLO defaults and the reference figures.

If nothing answers at ``HOST/healthz`` and HOST is the local default, the system is started with
``scripts/run.py`` (as ``make run`` does; its output goes to ``REPORTS/system.log``), awaited
until ``GET /v1/users/1/recommendations`` is personalised, and stopped at the end. A system that
was already running is used as it is and left running.

Exit status: 0 all SLOs met, 1 an SLO missed (each named, with by how much), 2 the run itself
could not be done (system not ready, Locust failed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "loadtests"
VENV = ROOT / ".venv-loadtest"
REQUIREMENTS = HERE / "requirements.txt"
LOCUSTFILE = HERE / "locustfile.py"
DEFAULT_HOST = "http://127.0.0.1:8000"
CLIENT_KEY = os.environ.get("LOADTEST_CLIENT_KEY", "dev-client-key")
ADMIN_KEY = os.environ.get("LOADTEST_ADMIN_KEY", "dev-admin-key")
#: The replica the resilience run kills; ``make run`` supervises it and restarts it.
REPLICA = "http://127.0.0.1:8101"
REPLICA_PORT = 8101

EXIT_SLO_MISSED = 1
EXIT_NOT_RUN = 2


class NotRun(Exception):
    """The load test could not be carried out (as opposed to: it ran and missed an SLO)."""


def say(message: str) -> None:
    print(f"loadtest | {message}", flush=True)


# ── the load-test virtualenv ──────────────────────────────────────────────────────────────
def _uv() -> list[str] | None:
    if found := shutil.which("uv"):
        return [found]
    probe = subprocess.run(
        [sys.executable, "-m", "uv", "--version"], capture_output=True, check=False
    )
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def ensure_venv() -> Path:
    """``.venv-loadtest`` with exactly the pinned requirements; rebuilt when they change."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    say(f"installing {REQUIREMENTS.relative_to(ROOT)} into {VENV.name}/")
    uv = _uv()
    if uv:
        if not python.exists():
            subprocess.run(
                [*uv, "venv", "--quiet", "--python", sys.executable, str(VENV)], check=True
            )
        subprocess.run(
            [*uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(REQUIREMENTS)],
            check=True,
        )
    else:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
        )
    stamp.write_text(digest + "\n")
    return python


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


# ── settings ──────────────────────────────────────────────────────────────────────────────
def _seconds(text: str) -> int:
    """``90``, ``90s``, ``2m``, ``1h``: seconds."""
    text = text.strip().lower()
    factor = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], 0)
    value = int(float(text[:-1] if factor else text) * (factor or 1))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("load", "resilience"), default="load")
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="PREFIX",
        help="no load: summary, chart and SLO verdict of the CSV Locust already wrote at PREFIX "
        "(e.g. a distributed run's master: --report-only reports/locust)",
    )
    parser.add_argument("--host", default=env.get("HOST") or DEFAULT_HOST)
    parser.add_argument("--duration", type=_seconds, default=_seconds(env.get("DURATION") or "60"))
    parser.add_argument("--users", type=int, default=int(env.get("USERS") or 20))
    parser.add_argument("--spawn-rate", type=float, default=float(env.get("SPAWN_RATE") or 5))
    parser.add_argument(
        "--shape", default=env.get("SHAPE") or "steady", choices=("steady", "ramp", "spike", "none")
    )
    parser.add_argument("--reports", type=Path, default=Path(env.get("REPORTS") or "reports"))
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env.get("WORKERS") or 0),
        help="distributed: a Locust master and this many workers on this machine (0: one process)",
    )
    parser.add_argument("--master-port", type=int, default=int(env.get("MASTER_PORT") or 5557))
    parser.add_argument(
        "--ready-timeout", type=_seconds, default=_seconds(env.get("READY_TIMEOUT") or "900")
    )
    parser.add_argument(
        "--baseline",
        type=_seconds,
        default=_seconds(env.get("BASELINE") or "45"),
        help="resilience: seconds of steady load before the first fault",
    )
    parser.add_argument(
        "--swap",
        choices=("retrain", "activate"),
        default=env.get("SWAP") or "retrain",
        help="resilience: retrain a new version, or activate another existing one",
    )
    parser.add_argument(
        "--cooldown",
        type=_seconds,
        default=_seconds(env.get("COOLDOWN") or "30"),
        help="resilience: seconds of load after the replica is back",
    )
    args = parser.parse_args(argv)
    args.host = args.host.rstrip("/")
    if not args.reports.is_absolute():
        args.reports = ROOT / args.reports
    if args.users < 1 or args.spawn_rate <= 0 or args.workers < 0:
        parser.error("USERS must be >= 1, SPAWN_RATE > 0 and WORKERS >= 0")
    return args


# ── HTTP, loopback and stdlib only ────────────────────────────────────────────────────────
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http(
    method: str, url: str, *, key: str | None = None, body: Any = None, timeout: float = 5
) -> tuple[int, Any]:
    """(status, parsed JSON or None); status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http only)
    if key:
        request.add_header("X-API-Key", key)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def is_local_default(host: str) -> bool:
    parts = urlsplit(host)
    return (
        parts.scheme == "http"
        and parts.hostname in {"127.0.0.1", "localhost"}
        and (parts.port or 80) == 8000
    )


def personalised(host: str) -> bool:
    status, body = http("GET", f"{host}/v1/users/1/recommendations?k=1", key=CLIENT_KEY)
    return status == 200 and isinstance(body, dict) and body.get("strategy") == "personalized"


# ── the system under test ─────────────────────────────────────────────────────────────────
class System:
    """The system at ``host``: used as it is when it answers, else started here (local only)."""

    def __init__(self, host: str, reports: Path, ready_timeout: int) -> None:
        self.host = host
        self.reports = reports
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = reports / "system.log"
        self._log: TextIO | None = None

    def __enter__(self) -> System:
        if http("GET", f"{self.host}/healthz", timeout=3)[0] == 200:
            say(f"using the system already running at {self.host} (it is left running)")
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
        self.process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "python"), "scripts/run.py"],
            cwd=ROOT,
            env={**os.environ, "PORT": "8000", "PYTHONUNBUFFERED": "1"},
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
        while not personalised(self.host):
            if self.process is not None and self.process.poll() is not None:
                raise NotRun(
                    f"the system exited (status {self.process.returncode}) before it was "
                    f"ready:\n{self._tail()}"
                )
            now = time.monotonic()
            if now - started > self.ready_timeout:
                raise NotRun(
                    f"{self.host} did not serve personalised recommendations to user 1 "
                    f"within {self.ready_timeout} s (READY_TIMEOUT); is the MovieLens "
                    f"demo loaded?\n{self._tail()}"
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
        if process is None:
            return
        if process.poll() is None:
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


# ── Locust ────────────────────────────────────────────────────────────────────────────────
@dataclass
class LocustRun:
    prefix: Path
    process: subprocess.Popen[bytes]
    started: float
    log: TextIO
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


def start_locust(
    args: argparse.Namespace, prefix: Path, *, shape: str, run_time: int, until: str = ""
) -> LocustRun:
    """Locust headless, as one process, or as a master and ``WORKERS`` workers on loopback."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for stale in prefix.parent.glob(f"{prefix.name}_*"):
        stale.unlink()
    locust = [str(VENV / "bin" / "locust"), "-f", str(LOCUSTFILE)]
    command = [
        *locust,
        "--headless",
        "--host", args.host,
        "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{run_time}s",
        "--stop-timeout", "10",
        "--csv", str(prefix),
        "--csv-full-history",
        "--html", f"{prefix}.html",
        "--only-summary",
    ]  # fmt: skip
    if args.workers:
        command += [
            "--master",
            "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(args.master_port),
            "--expect-workers", str(args.workers),
            "--expect-workers-max-wait", "60",
        ]  # fmt: skip
    env = {**os.environ, "LOADTEST_SHAPE": shape}
    log = Path(f"{prefix}.log").open("w", encoding="utf-8")  # noqa: SIM115 (closed by finish)
    topology = f", {args.workers} workers" if args.workers else ""
    say(
        f"locust: {shape} shape, {args.users} users at {args.spawn_rate}/s "
        f"{until or f'for {run_time} s'} "
        f"against {args.host}{topology} (output in {_show(Path(f'{prefix}.log'))})"
    )
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    workers = [
        subprocess.Popen(
            [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port",
             str(args.master_port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(args.workers)
    ]  # fmt: skip
    return LocustRun(prefix, process, time.time(), log, workers)


def _end(process: subprocess.Popen[bytes], timeout: float, *, interrupt: bool) -> None:
    """Wait for one Locust process (bounded); Ctrl-C it first when ``interrupt``, then kill."""
    if interrupt and process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        say(f"locust (pid {process.pid}) still running after {timeout:.0f} s: interrupting it")
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def finish_locust(run: LocustRun, *, timeout: float, interrupt: bool = False) -> None:
    """Wait for Locust (bounded); ``interrupt``: stop it now, as Ctrl-C would (reports kept)."""
    try:
        _end(run.process, timeout, interrupt=interrupt)
        for worker in run.workers:  # they quit when the master does
            _end(worker, 15, interrupt=False)
    except BaseException:  # Ctrl-C here: leave no Locust behind
        for process in (run.process, *run.workers):
            _end(process, 30, interrupt=True)
        raise
    finally:
        run.log.close()
    stats = Path(f"{run.prefix}_stats.csv")
    if run.process.returncode not in (0, 1) or not stats.exists():
        tail = "\n".join(Path(f"{run.prefix}.log").read_text(errors="replace").splitlines()[-30:])
        raise NotRun(f"locust failed (status {run.process.returncode}):\n{tail}")


# ── reporting ─────────────────────────────────────────────────────────────────────────────
def report(
    prefix: Path, *, title: str, marks: Sequence[tuple[str, float, float]] = ()
) -> tuple[dict[str, Any], list[Any], str]:
    import report as rep  # loadtests/report.py, beside this file

    run = rep.load_run(prefix)
    total = rep.aggregated(run["stats"])
    results = rep.evaluate(total, rep.Slo.from_env(os.environ))
    notes = []
    if run["history"]:
        chart = rep.draw_chart(
            rep.chart_series(run["history"]), Path(f"{prefix}.png"), title=title, marks=marks
        )
        notes.append(f"chart: {_show(chart)}, Locust's report: {_show(Path(f'{prefix}.html'))}")
    text = rep.render_summary(run["stats"], results, run["journeys"], run["failures"], notes)
    Path(f"{prefix}_summary.txt").write_text(text + "\n", encoding="utf-8")
    return run, results, text


def _show(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def machine() -> str:
    memory = ""
    with suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return f"{os.cpu_count()} cores{memory}"


def run_load(args: argparse.Namespace) -> int:
    prefix = args.reports / "locust"
    with System(args.host, args.reports, args.ready_timeout):
        run = start_locust(args, prefix, shape=args.shape, run_time=args.duration)
        finish_locust(run, timeout=args.duration + 90)
    title = (
        f"{args.shape}, {args.users} users, {args.duration} s against {args.host} - "
        f"{machine()} - {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    return verdict(prefix, title, args)


def verdict(prefix: Path, title: str, args: argparse.Namespace | None) -> int:
    """Summary, chart and JSON digest of the run at ``prefix``; the exit status of the SLOs."""
    import report as rep

    if not Path(f"{prefix}_stats.csv").exists():
        raise NotRun(f"no Locust statistics at {prefix}_stats.csv")
    data, results, text = report(prefix, title=title)
    print(text, flush=True)
    total = rep.aggregated(data["stats"])
    summary = {
        "scenario": "load",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            key: getattr(args, key)
            for key in ("host", "shape", "users", "spawn_rate", "duration", "workers")
        }
        if args
        else None,
        "requests": total.requests,
        "failures": total.failures,
        "rps": round(total.rps, 1),
        "p50_ms": total.p50_ms,
        "p95_ms": total.p95_ms,
        "p99_ms": total.p99_ms,
        "slo": [
            {"variable": r.variable, "passed": r.passed, "message": r.message} for r in results
        ],
        "fallbacks": rep.fallbacks(data["journeys"]).__dict__,
        "server_errors": rep.server_errors(data["journeys"], data["failures"]),
    }
    Path(f"{prefix}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return EXIT_SLO_MISSED if rep.missed(results) else 0


# ── the resilience scenario ───────────────────────────────────────────────────────────────
@dataclass
class Fault:
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
        time.sleep(interval)
    return False


def serving_version(host: str) -> int | None:
    status, body = http("GET", f"{host}/v1/users/1/recommendations?k=1", key=CLIENT_KEY)
    return body.get("model_version") if status == 200 and isinstance(body, dict) else None


def _activate_another(host: str, before: int | None) -> tuple[int | None, str]:
    """Activate the newest non-rejected version other than ``before``: (version, problem)."""
    code, models = http("GET", f"{host}/v1/models", key=ADMIN_KEY)
    others = [
        model["version"]
        for model in (models if code == 200 and isinstance(models, list) else [])
        if model.get("version") != before and model.get("status") != "rejected"
    ]
    if not others:
        return None, "there is no other version to activate"
    target = others[0]
    say(f"POST /v1/models/{target}/activate")
    code, _ = http("POST", f"{host}/v1/models/{target}/activate", key=ADMIN_KEY)
    return (target, "") if code == 200 else (None, f"activate {target}: HTTP {code}")


def swap_model(host: str, mode: str) -> tuple[Fault, int | None]:
    """Swap the served model under load; returns the fault and the version to restore after.

    ``retrain``: POST /v1/models/retrain and wait for the task; if it published nothing new
    (the gate rejected it), activate another version instead. ``activate``: activate the newest
    other version straight away. A version activated that way is re-activated after the run.
    """
    start = time.time()
    status, active = http("GET", f"{host}/v1/models/active", key=ADMIN_KEY)
    before = active.get("version") if status == 200 and isinstance(active, dict) else None

    def failed(outcome: str) -> tuple[Fault, int | None]:
        return Fault("model swap", start, time.time(), outcome, False), None

    target: int | None = None
    if mode == "retrain":
        say(f"fault 1: model swap; active version {before}; POST /v1/models/retrain")
        status, body = http(
            "POST", f"{host}/v1/models/retrain", key=ADMIN_KEY, body={"force": True}
        )
        if status != 202 or not isinstance(body, dict):
            return failed(f"retrain refused: HTTP {status}")
        task_id = body["task_id"]
        state: dict[str, Any] = {}

        def finished() -> bool:
            nonlocal state
            code, answer = http("GET", f"{host}/v1/tasks/{task_id}", key=ADMIN_KEY)
            state = answer if code == 200 and isinstance(answer, dict) else {}
            return state.get("state") in {"SUCCESS", "FAILURE"}

        if not wait_until(finished, 600, interval=1):
            return failed(f"task {task_id} unfinished after 600 s")
        result = state.get("result") or {}
        say(
            f"retrain task {state.get('state')} after {time.time() - start:.0f} s: "
            f"{result.get('status')}, version {result.get('version')} {result.get('reasons') or ''}"
        )
        if result.get("status") == "published" and result.get("version") != before:
            target = result["version"]
    else:
        say(f"fault 1: model swap; active version {before}; activating another version")
    restore = None
    if target is None:
        target, problem = _activate_another(host, before)
        if target is None:
            return failed(f"no new version published and {problem}")
        restore = before
    served = wait_until(lambda: serving_version(host) == target, 60)
    outcome = (
        f"version {before} -> {target} ({mode}), served after {time.time() - start:.0f} s"
        if served
        else f"version {target} not served within 60 s"
    )
    return Fault("model swap", start, time.time(), outcome, served), restore


def replica_pid() -> int | None:
    import psutil

    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == REPLICA_PORT
            and connection.pid
        ):
            return int(connection.pid)
    return None


def kill_replica() -> Fault:
    import psutil

    start = time.time()
    pid = replica_pid()
    if pid is None:
        return Fault("replica kill", start, time.time(), f"nothing listens on {REPLICA}", False)
    command = " ".join(psutil.Process(pid).cmdline())
    if "recommender" not in command:
        return Fault(
            "replica kill",
            start,
            time.time(),
            f"pid {pid} on port {REPLICA_PORT} is not a recommender: {command}",
            False,
        )
    say(f"fault 2: SIGKILL to the recommender replica on port {REPLICA_PORT} (pid {pid})")
    os.kill(pid, signal.SIGKILL)
    killed = time.time()

    def back() -> bool:
        new = replica_pid()
        return (
            new is not None
            and new != pid
            and http("GET", f"{REPLICA}/healthz", timeout=2)[0] == 200
        )

    if not wait_until(back, 120):
        return Fault(
            "replica kill",
            start,
            time.time(),
            "the replica did not come back within 120 s (no supervisor?)",
            False,
        )
    healthy = time.time()
    wait_until(lambda: http("GET", f"{REPLICA}/readyz", timeout=2)[0] == 200, 60)
    ready = time.time()
    return Fault(
        "replica kill",
        start,
        ready,
        f"pid {pid} killed; back (healthz) after {healthy - killed:.1f} s, ready (model "
        f"loaded) after {ready - killed:.1f} s, pid {replica_pid()}",
        True,
    )


def run_resilience(args: argparse.Namespace) -> int:
    import report as rep

    if not is_local_default(args.host):
        raise NotRun(f"the resilience scenario kills a local replica: HOST must be {DEFAULT_HOST}")
    prefix = args.reports / "resilience"
    faults: list[Fault] = []
    restore: int | None = None
    with System(args.host, args.reports, args.ready_timeout):
        # Locust's own limit is only a safety net: the run ends once the faults are over.
        run = start_locust(
            args,
            prefix,
            shape="steady",
            run_time=args.baseline + 1800,
            until="until the faults are over",
        )
        try:
            time.sleep(args.baseline)
            if run.process.poll() is not None:
                raise NotRun("locust stopped before the faults")
            fault, restore = swap_model(args.host, args.swap)
            faults.append(fault)
            time.sleep(15)
            faults.append(kill_replica())
            say(f"faults over; {args.cooldown} s more of steady load")
            time.sleep(args.cooldown)
        finally:
            finish_locust(run, timeout=60, interrupt=True)
        if restore is not None:
            code, _ = http("POST", f"{args.host}/v1/models/{restore}/activate", key=ADMIN_KEY)
            say(f"re-activated version {restore} as before the run: HTTP {code}")

    warmup = min(15.0, args.baseline / 3)
    marks = [(f.label, f.start, f.end) for f in faults]
    title = (
        f"resilience: model swap and replica kill under {args.users} users - {machine()} - "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    data, results, text = report(prefix, title=title, marks=marks)
    history = data["history"]
    steady = (run.started + warmup, faults[0].start if faults else run.started + args.baseline)
    spike = rep.p99_spike(
        history, steady, (steady[1], max(f.end for f in faults) + 10) if faults else steady
    )
    per_fault = {
        f.label: rep.p99_spike(history, steady, (f.start, f.end + 10)).max_p99_ms for f in faults
    }
    errors = rep.server_errors(data["journeys"], data["failures"])
    seen = rep.fallbacks(data["journeys"])
    total = rep.aggregated(data["stats"])
    lines = [text, "", "resilience:"]
    lines += [f"  {'ok  ' if f.ok else 'FAIL'} {f.label}: {f.outcome}" for f in faults]
    lines.append(f"  5xx responses: {errors} (must be 0)")
    lines.append(f"  requests failed: {total.failures} of {total.requests}")
    lines.append(
        f"  designed fallbacks (popular, recommender_unavailable): "
        f"{seen.by_reason.get('known_user/recommender_unavailable', 0)} known-user lists"
    )
    lines.append(
        f"  p99 steady before the faults: {spike.steady_p99_ms:.0f} ms; max during the "
        f"faults: {spike.max_p99_ms:.0f} ms (+{spike.increase_ms:.0f} ms, "
        f"{spike.factor:.1f}x); per fault: "
        + ", ".join(f"{label} {value:.0f} ms" for label, value in per_fault.items())
    )
    problems = [f"{f.label}: {f.outcome}" for f in faults if not f.ok]
    if errors:
        problems.append(f"{errors} responses with a 5xx status")
    if len(faults) < 2:
        problems.append("not every fault was injected")
    failure_ratio = [r for r in results if r.variable == "SLO_FAILURE_RATIO" and not r.passed]
    problems += [r.message for r in failure_ratio]
    lines.append(
        "RESILIENCE FAILED: " + "; ".join(problems)
        if problems
        else "resilience passed: no 5xx, the replica came back, the model was swapped"
    )
    text = "\n".join(lines)
    print(text, flush=True)
    Path(f"{prefix}_summary.txt").write_text(text + "\n", encoding="utf-8")
    Path(f"{prefix}_summary.json").write_text(
        json.dumps(
            {
                "scenario": "resilience",
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(),
                "users": args.users,
                "faults": [f.__dict__ for f in faults],
                "server_errors": errors,
                "requests": total.requests,
                "failures": total.failures,
                "fallbacks": seen.__dict__,
                "steady_p99_ms": spike.steady_p99_ms,
                "max_p99_ms": spike.max_p99_ms,
                "p99_max_per_fault_ms": per_fault,
            },
            indent=1,
        )
        + "\n"
    )
    return EXIT_SLO_MISSED if problems else 0


@contextmanager
def _interrupts_as_not_run() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt as error:
        raise NotRun("interrupted") from error


def main(argv: Sequence[str]) -> int:
    if not in_venv():
        python = ensure_venv()
        # Re-run this script inside the load-test virtualenv (Locust, matplotlib, psutil).
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])  # noqa: S606
    sys.path.insert(0, str(HERE))
    args = parse_args(argv)
    args.reports.mkdir(parents=True, exist_ok=True)
    try:
        with _interrupts_as_not_run():
            if args.report_only:
                prefix = args.report_only.resolve()
                return verdict(prefix, f"{prefix.name} - {machine()}", None)
            if args.scenario == "resilience":
                return run_resilience(args)
            return run_load(args)
    except NotRun as error:
        say(f"the load test did not run: {error}")
        return EXIT_NOT_RUN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
