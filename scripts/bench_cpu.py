"""CPU time a process spends per request: robust where wall-clock rates are not.

On a machine shared with other work, requests/s move with the neighbours' load; the CPU seconds
the kernel charged a service (utime + stime in /proc/<pid>/stat) over a run, divided by the
requests of that run, do not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

Result = TypeVar("Result")

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
    figures, spent = cpu_spent(pids, run)
    requests = max(figures["requests_per_second"] * duration, 1)
    for name, used in spent.items():
        figures[f"{name}_cpu_us_per_request"] = round(used / requests * 1e6)
    return figures


def cpu_spent(
    pids: Mapping[str, int], run: Callable[[], Result]
) -> tuple[Result, dict[str, float]]:
    """What ``run()`` returns, and the CPU seconds each named process spent while it ran."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = run()
    return result, {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
