"""`make loadtest` and `make loadtest-resilience`: Locust, headless, against the system.

    python3 loadtests/run.py                        # the load test (make loadtest)
    python3 loadtests/run.py --scenario resilience  # faults under load (make loadtest-resilience)
    python3 loadtests/run.py --api-keys             # API_KEYS accepting the visitors' keys

Any Python 3.11 starts it: it builds ``.venv-loadtest`` (``loadtest_venv.py``) and re-executes
itself there. It starts the system when needed (``system.py``), runs Locust with its own
reports (``--csv``, ``--html``) and returns Locust's exit code, which the SLO verdict of the
locustfile sets (``verdict.py``): 0 every SLO met, 1 one missed (each named, with by how much),
2 the run could not be done (system not ready, Locust failed).

Settings, from the environment (``make loadtest USERS=40``) or the matching option (``--help``):
HOST, DURATION, USERS, SPAWN_RATE, SHAPE, WORKLOAD, CLIENT_KEYS, WORKERS, REPORTS,
READY_TIMEOUT; resilience: BASELINE, COOLDOWN, SWAP. The SLO limits (SLO_P99_MS…) go to Locust
as they are. ``docs/loadtesting.md`` explains each.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from loadtest_venv import ROOT, VENV, ensure_venv, in_venv

HERE = ROOT / "loadtests"
EXIT_MISSED = 1
EXIT_NOT_RUN = 2
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEVELOPMENT_KEYS = {"dev-client-key": "client", "dev-admin-key": "admin"}
SHAPES = ("steady", "ramp", "spike", "none")
WORKLOADS = ("site", "movielens")
SWAPS = ("retrain", "activate")
#: Verdict lines (``verdict.py``); an exit status 1 without one is Locust failing, not an SLO.
VERDICT_ENDS = ("all SLOs met", "SLO MISSED:")


def _seconds(text: str) -> int:
    """``90``, ``90s``, ``2m``, ``1h``: seconds."""
    text = text.strip().lower()
    factor = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], 0)
    try:
        value = int(float(text[:-1] if factor else text) * (factor or 1))
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration (90, 90s, 2m, 1h)")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--scenario", choices=("load", "resilience"), default="load")
    add("--api-keys", action="store_true", help="print API_KEYS for the chosen client keys")
    add("--host", default=env.get("HOST") or "http://127.0.0.1:8000")
    add("--duration", type=_seconds, default=env.get("DURATION") or "60")
    add("--users", type=int, default=env.get("USERS") or "20")
    add("--spawn-rate", type=float, default=env.get("SPAWN_RATE") or "5")
    # Defaults are the environment's text: argparse parses (and checks) them like arguments,
    # so a bad DURATION=... is a usage error (exit 2, "not run"), never a missed SLO's 1.
    add("--shape", default=env.get("SHAPE") or "steady", choices=SHAPES)
    add("--workload", default=env.get("WORKLOAD") or "site", choices=WORKLOADS)
    add("--client-keys", type=int, default=env.get("CLIENT_KEYS") or "64", help="movielens")
    add("--reports", type=Path, default=Path(env.get("REPORTS") or "reports"))
    add("--workers", type=int, default=env.get("WORKERS") or "0", help="N: master + N workers")
    add("--master-port", type=int, default=env.get("MASTER_PORT") or "5557")
    add("--ready-timeout", type=_seconds, default=env.get("READY_TIMEOUT") or "900")
    add("--baseline", type=_seconds, default=env.get("BASELINE") or "45")
    add("--cooldown", type=_seconds, default=env.get("COOLDOWN") or "30")
    add("--swap", choices=SWAPS, default=env.get("SWAP") or "retrain")
    args = parser.parse_args(argv)
    # argparse checks a default against nothing: SHAPE=..., WORKLOAD=..., SWAP=... here.
    for name, value, allowed in (
        ("SHAPE", args.shape, SHAPES),
        ("WORKLOAD", args.workload, WORKLOADS),
        ("SWAP", args.swap, SWAPS),
    ):
        if value not in allowed:
            parser.error(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    args.host = args.host.rstrip("/")
    if not args.reports.is_absolute():
        args.reports = ROOT / args.reports
    if args.users < 1 or args.spawn_rate <= 0 or args.workers < 0 or args.client_keys < 1:
        parser.error("USERS and CLIENT_KEYS must be >= 1, SPAWN_RATE > 0 and WORKERS >= 0")
    return args


def client_keys(args: argparse.Namespace) -> list[str]:
    """The visitors' keys: LOADTEST_CLIENT_KEYS as given, else one key (site) or many."""
    if given := os.environ.get("LOADTEST_CLIENT_KEYS"):
        return [key.strip() for key in given.split(",") if key.strip()]
    if args.workload == "movielens":
        return [f"loadtest-client-{n:02d}" for n in range(1, args.client_keys + 1)]
    return [os.environ.get("LOADTEST_CLIENT_KEY") or "dev-client-key"]


def api_keys(keys: Sequence[str]) -> str:
    """API_KEYS for a system that accepts the development keys and ``keys`` as clients."""
    roles = {**DEVELOPMENT_KEYS, **{key: "client" for key in keys}}
    return ",".join(f"{key}:{role}" for key, role in roles.items())


def run_time(args: argparse.Namespace) -> int:
    """Locust's --run-time, in seconds."""
    if args.scenario == "resilience":
        # The resilience shape ends the run once its faults are over; this is a safety net.
        return int(args.baseline + args.cooldown + 1800)
    return int(args.duration)


def locust_command(args: argparse.Namespace, prefix: Path, keys: Sequence[str]) -> list[str]:
    command = [
        str(VENV / "bin" / "locust"), "-f", str(HERE / "locustfile.py"), "--headless",
        "--host", args.host, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{run_time(args)}s", "--stop-timeout", "10", "--only-summary",
        "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
        "--workload", args.workload, "--client-keys", ",".join(keys),
    ]  # fmt: skip
    if args.scenario == "resilience":
        command += ["--baseline", str(args.baseline), "--cooldown", str(args.cooldown)]
        command += ["--swap", args.swap]
    if args.workers:
        command += [
            "--master", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(args.master_port),
            "--expect-workers", str(args.workers), "--expect-workers-max-wait", "60",
        ]  # fmt: skip
    return command


def _tee(stream: IO[bytes], log: IO[str], seen: list[str]) -> None:
    """Locust's output to the terminal and to the log; remembers whether a verdict was said."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)
        if any(end in line for end in VERDICT_ENDS):
            seen.append(line)


def run_locust(args: argparse.Namespace, keys: Sequence[str]) -> int:
    """Locust (and its workers) to the end, bounded in time; Locust's exit status."""
    from system import NotRun, say

    name = "resilience" if args.scenario == "resilience" else "locust"
    prefix = args.reports / name
    shape = "resilience" if args.scenario == "resilience" else args.shape
    env = {**os.environ, "LOADTEST_SHAPE": shape}
    log_path = Path(f"{prefix}.log")
    say(
        f"locust: {shape} shape, {args.users} users, {args.workload} workload against "
        f"{args.host}; reports {prefix}.html and {prefix}_*.csv, output in {log_path}"
    )
    command = locust_command(args, prefix, keys)
    worker = [*command[:3], "--worker", "--master-host", "127.0.0.1"]
    worker += ["--master-port", str(args.master_port)]
    seen: list[str] = []
    with log_path.open("w", encoding="utf-8") as log:
        common: dict[str, Any] = {
            "cwd": ROOT,
            "env": env,
            "stdin": subprocess.DEVNULL,
            "stderr": subprocess.STDOUT,
        }
        master = subprocess.Popen(command, stdout=subprocess.PIPE, **common)
        workers = [subprocess.Popen(worker, stdout=log, **common) for _ in range(args.workers)]
        assert master.stdout is not None
        tee = threading.Thread(target=_tee, args=(master.stdout, log, seen), daemon=True)
        tee.start()
        try:
            status = _wait(master, run_time(args) + 120)
            for process in workers:  # they quit when the master does
                _wait(process, 30)
        except BaseException:  # Ctrl-C here: leave no Locust behind
            for process in (master, *workers):
                _wait(process, 0)
            raise
        tee.join(timeout=10)
    if (status == EXIT_MISSED and not seen) or status not in (0, EXIT_MISSED):
        raise NotRun(f"locust failed (status {status}); its output is in {log_path}")
    return status


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The process's exit status; after ``timeout`` it is interrupted (reports are written),
    then killed."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def main(argv: Sequence[str]) -> int:
    if not in_venv():
        try:
            python = ensure_venv()
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"loadtest | the load test did not run: no virtualenv ({error})", flush=True)
            return EXIT_NOT_RUN
        # Re-run this script inside the load-test virtualenv (Locust, requests, psutil).
        os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])  # noqa: S606
    # Only the load-test virtualenv has what these import (requests).
    from system import NotRun, System, say

    # A `kill` ends the run as Ctrl-C does: Locust and a system it started are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    args = parse_args(argv)
    keys = client_keys(args)
    if args.api_keys:
        print(api_keys(keys))
        return 0
    args.reports.mkdir(parents=True, exist_ok=True)
    try:
        if args.scenario == "resilience" and urlsplit(args.host).hostname not in LOOPBACK:
            raise NotRun(f"the resilience scenario kills a local replica: HOST {args.host}")
        started = System(
            args.host,
            args.reports,
            args.ready_timeout,
            keys[0],
            api_keys(keys),
            keys_check=lambda: check_keys(args.host, keys),
        )
        with started:
            check_keys(args.host, keys)
            return run_locust(args, keys)
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_NOT_RUN
    except NotRun as error:
        say(f"the load test did not run: {error}")
        return EXIT_NOT_RUN


def check_keys(host: str, keys: Sequence[str]) -> None:
    """Every client key is accepted, else say how to start a system that accepts them."""
    from api_client import Api
    from system import NotRun

    for key in dict.fromkeys(keys):
        status, _ = Api(host, key).get("/v1/items/popular?k=1")
        if status in (401, 403):
            raise NotRun(
                f"the system at {host} refuses the client key {key!r} (HTTP {status}); start "
                f'it with API_KEYS="$(python3 loadtests/run.py --api-keys)" (with the same '
                "WORKLOAD and CLIENT_KEYS), or stop it and let this script start one"
            )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
