"""`make bench`: the serving targets, each as a ratio against a baseline measured in the same run.

Two systems, one after the other, each started as `make run` starts it on free loopback ports
(scripts/bench_system.py), each loaded through the public API and trained through the worker,
then measured with wrk (the same load tool for the system and its baseline):

Synthetic (twenty taste clusters, k=10, one API key with its rate limit off):
1. cached recommendations through the gateway vs a bare FastAPI endpoint doing one Redis GET
   (scripts/bench_baseline.py, configured as the services are);
2. uncached personalised recommendations (random users and pages, the cache emptied before
   each run) vs the same baseline, through one replica and through two, and the p99 at half
   of that peak from an open-loop client at a fixed rate;
3. scoring vs a bare numpy dot product + argpartition over the same factors;
4. freshness: from an event's 202 to the user's list reflecting it.

MovieLens (the demo of `make run`: 9,066 items, real users, k from 5 to 44, offset from 0 to
200, 64 client keys with the default per-key rate limit on): cached and uncached lists vs the
bare FastAPI + redis-py endpoint, the CPU each service spends per uncached list, and the p99 at
half of the uncached peak; then uncached lists one at a time by the length of the user's
history, up to HISTORY_CAP (scripts/bench_history.py).

Then scale: a 100,000-item x 1,000,000-user model in one recommender: memory and p99.

Throughput figures are taken in interleaved rounds and reported as the median ratio (the
machine's speed drifts from minute to minute), with how many cores the machine gave before and
after them. Prints every figure and writes them to reports/bench.json. BENCH_SECONDS (10) and
BENCH_ROUNDS (5) change the run lengths.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import bench_throughput
import bench_workload
from bench_data import DEMO_API_KEYS, load_movielens, load_synthetic
from bench_freshness import freshness
from bench_history import by_history_length
from bench_machine import machine_parallelism
from bench_model import scale, scoring
from bench_report import report
from bench_system import RUN_DEFAULTS, running_system
from bench_wrk import ensure_wrk, say

from recsys_shared.testing import API_KEYS, interrupt_on_sigterm

#: Client keys of the MovieLens workload: many keys, each under the default rate limit.
MOVIELENS_KEYS = [f"bench-client-{index:02d}" for index in range(64)]


def main() -> None:
    ensure_wrk()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as directory:
        workdir = Path(directory)
        say("synthetic: loading a twenty-cluster data set through the API and training…")
        # One API key drives thousands of requests a second here: its rate limit would be the
        # figure measured, so it is off (production keeps the default of 1000/s per key).
        with running_system(workdir / "synthetic", RATE_LIMIT_PER_SECOND="0") as system:
            users = load_synthetic(system.stack)
            results["machine_before"] = machine_parallelism()
            results |= bench_throughput.synthetic(system, bench_workload.synthetic(users))
            results["machine_after"] = machine_parallelism()
            results["scoring"] = scoring(system.stack)
            results["freshness"] = freshness(system.stack, users)
        say("MovieLens: loading the demo as `make run` does, and training…")
        client_keys = ",".join(f"{key}:client" for key in MOVIELENS_KEYS)
        with running_system(
            workdir / "movielens",
            service_defaults=RUN_DEFAULTS,
            API_KEYS=f"{API_KEYS},{DEMO_API_KEYS},{client_keys}",
        ) as system:
            users = load_movielens(system.stack)
            workload = bench_workload.movielens(users, MOVIELENS_KEYS)
            results["movielens"] = {
                "users": len(users),
                "api_keys": len(MOVIELENS_KEYS),
                **bench_throughput.movielens(system, workload),
                "machine_after": machine_parallelism(),
                "by_history_length": by_history_length(system, workload),
            }
        results["scale"] = scale(workdir)
    report(results)


if __name__ == "__main__":
    interrupt_on_sigterm()
    main()
