"""How many cores the machine gives right now, recorded beside every run's ratios."""

from __future__ import annotations

import subprocess
import sys

#: A fixed CPU-bound loop, run alone and then twice at once (see machine_parallelism()).
_SPIN = "import time; t = time.perf_counter(); sum(range(30_000_000)); print(time.perf_counter()-t)"


def machine_parallelism() -> dict[str, float]:
    """How many cores the machine gives right now: a fixed loop alone, then two at once. On a
    shared virtual machine the second core is at times largely someone else's; the system's
    figures (four processes) suffer from that and the one-process baseline does not, so every
    run records it beside its ratios."""

    def spin(copies: int) -> list[float]:
        runs = [
            subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
            for _ in range(copies)
        ]
        return [float(run.communicate()[0]) for run in runs]

    alone = min(spin(1)[0] for _ in range(2))
    together = max(spin(2))
    return {
        "loop_alone_s": round(alone, 3),
        "two_loops_at_once_s": round(together, 3),
        "cores_available": round(2 * alone / together, 2),
    }
