"""Users with long histories: what an uncached list costs by the length of the user's history.

A list reads, scores and excludes the user's whole stored history (up to ``HISTORY_CAP``), so its
cost grows with the history. On the MovieLens system: the median MovieLens user beside users
made here with 1,000 and ``HISTORY_CAP`` (5,000 by default) clicks on distinct movies,
each asked for ``LISTS`` uncached lists one at a time through the one-replica gateway (the
workload's ``k`` and offsets, no page twice), with the CPU its gateway and its recommender spent
per list.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import demo
import httpx
from bench_cpu import cpu_spent
from bench_system import ONE_REPLICA_GATEWAY, System
from bench_workload import Workload
from bench_wrk import say

from feature_store.config import Settings as FeatureStoreSettings
from recsys_shared.testing import client_headers, wait_for_applied

#: ``HISTORY_CAP``'s default: the longest history a user keeps as ``make run`` starts it.
HISTORY_CAP: int = FeatureStoreSettings.model_fields["history_cap"].default
#: The made users' history lengths.
MADE_HISTORIES = (1_000, HISTORY_CAP)
LISTS = 200
#: The processes that serve a list through the one-replica gateway.
SERVING = {"gateway": ONE_REPLICA_GATEWAY, "recommender": "recommender1"}


def by_history_length(system: System, workload: Workload) -> list[dict[str, Any]]:
    say("long histories: uncached lists one at a time, by the length of the user's history…")
    ratings = demo.movielens()
    sizes = ratings.groupby("userId").size().sort_values(kind="stable")
    histories = {str(sizes.index[len(sizes) // 2]): int(sizes.iloc[len(sizes) // 2])}
    movies = ratings.movieId.drop_duplicates().astype(str).tolist()
    random.Random(7).shuffle(movies)
    with httpx.Client(base_url=system.one_replica, headers=client_headers(), timeout=30) as http:
        for length in MADE_HISTORIES:
            user = f"bench-history-{length}"
            for start in range(0, length, 1000):
                clicks = [
                    {"user_id": user, "item_id": movie, "type": "click"}
                    for movie in movies[start : min(start + 1000, length)]
                ]
                http.post("/v1/events", json={"events": clicks}).raise_for_status()
            histories[user] = length
        wait_for_applied(system.stack.gateway, timeout=120)
        return [
            _lists_of(system, http, workload, user, length) for user, length in histories.items()
        ]


def _lists_of(
    system: System, http: httpx.Client, workload: Workload, user: str, length: int
) -> dict[str, Any]:
    """``LISTS`` uncached lists of ``user``: wall time, and CPU per list of each process."""
    low, high = workload.k_range
    pages = [(k, offset) for k in range(low, high + 1) for offset in range(workload.max_offset + 1)]
    system.forget_cached_lists()
    pids = {name: system.stack.processes[process].pid for name, process in SERVING.items()}
    samples = random.Random(length).sample(pages, LISTS)
    (milliseconds, cached), spent = cpu_spent(pids, lambda: _ask(http, user, samples))
    milliseconds.sort()
    return {
        "user": user,
        "history": length,
        "p50_ms": round(statistics.median(milliseconds), 2),
        "p90_ms": round(milliseconds[int(LISTS * 0.9)], 2),
        **{f"{name}_cpu_us_per_list": round(used / LISTS * 1e6) for name, used in spent.items()},
        "cached": cached,  # 0: every list was computed
    }


def _ask(http: httpx.Client, user: str, pages: list[tuple[int, int]]) -> tuple[list[float], int]:
    """Each page of ``user``'s list, one at a time: milliseconds each, and how many were cached."""
    milliseconds, cached = [], 0
    for k, offset in pages:
        started = time.perf_counter()
        response = http.get(f"/v1/users/{user}/recommendations", params={"k": k, "offset": offset})
        milliseconds.append((time.perf_counter() - started) * 1000)
        cached += bool(response.raise_for_status().json()["cached"])
    return milliseconds, cached
