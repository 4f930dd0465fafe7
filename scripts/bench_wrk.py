"""wrk, the closed-loop load tool of `make bench`: installing it, running it, reading its figures.

The same tool drives the system and its baselines, so a ratio compares the servers, not the
clients. BENCH_SECONDS (10) and BENCH_CONNECTIONS (32) set every run's length and concurrency.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from recsys_shared.testing import client_headers

DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))


def say(text: str) -> None:
    print(text, flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    say("installing wrk (Debian package)…")
    installed = subprocess.run([str(Path(__file__).parent / "apt-install.sh"), "wrk"], check=False)
    if installed.returncode != 0:
        raise SystemExit("make bench needs wrk: scripts/apt-install.sh wrk, as root")
    return "wrk"


def wrk(url: str, *, lua: str | None = None) -> dict[str, float]:
    """Closed-loop peak: requests/s and latency percentiles as wrk reports them. A ``lua``
    script chooses each request (and its API key); without one, every request is ``url``
    with the test client's key."""
    argv = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
    for name, value in client_headers().items():
        argv += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua or "")
    if lua:
        argv += ["-s", script.name]
    try:
        # Bounded: a server that stops answering must not hold `make bench` past its runs.
        output = subprocess.run(
            [*argv, url], check=True, capture_output=True, text=True, timeout=DURATION + 30
        ).stdout
    finally:
        Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    percentiles = {
        f"p{label}": _millis(value)
        for label, value in re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", output, re.MULTILINE)
    }
    return {
        "requests_per_second": round(rps),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        **percentiles,
    }


def _millis(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)
