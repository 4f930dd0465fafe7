"""CPU time a process spends per request: robust where wall-clock rates are not.

On a machine shared with other work, requests/s move with the neighbours' load; the CPU seconds
the kernel charged a service (utime + stime in /proc/<pid>/stat) over a run, divided by the
requests of that run, do not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    # Fields after the command name (which may hold spaces, hence the split on ")").
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def with_cpu_per_request(
    pids: Mapping[str, int], run: Callable[[], dict[str, float]], duration: float
) -> dict[str, float]:
    """``run`` (a wrk run of ``duration`` seconds), with each named process's CPU µs per
    request over it."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    figures = run()
    requests = max(figures["requests_per_second"] * duration, 1)
    for name, pid in pids.items():
        used = cpu_seconds(pid) - before[name]
        figures[f"{name}_cpu_us_per_request"] = round(used / requests * 1e6)
    return figures
