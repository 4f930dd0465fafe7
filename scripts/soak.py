"""`make soak`: steady traffic for a bounded time; Redis's memory must plateau.

Starts its own system (a durable redis-server as `make run` has it, one without persistence
for cached lists and records, the feature-store, a recommender, the gateway and a Celery
worker) with the year's clocks shrunk to minutes: idempotency markers kept 60 s
(``IDEMPOTENCY_WINDOW_SECONDS``), users forgotten after 90 s of silence
(``USER_RETENTION_DAYS`` as a fraction of a day, checked every 5 s), served-list records and
cached lists kept 60 s. It loads a catalogue and a first population, trains a model, then for
``SOAK_SECONDS`` (600) ingests ``SOAK_EVENTS_PER_SECOND`` (500) events a second — 90% with an
``event_id``, 2% resends of recent ones, some clicks attributed to served lists — and serves
``SOAK_READS_PER_SECOND`` (50) reads (lists for users, popular and similar items). The
population is fixed in size (2,000 users at any moment) and moves: 10 new user ids a second
join while the oldest fall silent, so retention has users to forget all along.

Every 5 s it samples ``used_memory`` of both Redis; at the start, at each third and at the
end it takes a census of every key by family (scripts/memory_harness.py). The verdict: for each
Redis, the growth per minute over the last third (a least-squares slope of its samples) must
be at most 5% of that over the first third. Prints both, the samples and what grew in the
last third; writes reports/soak.json; exits 1 when memory did not plateau or the system did
not keep up with the traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from memory_harness import (
    TYPES,
    Family,
    catalogue,
    category,
    census,
    census_growth,
    census_json,
    post,
    running_system,
    taste_item,
    train,
    used_memory,
)

from recsys_shared import keys, testing

ROOT = Path(__file__).resolve().parent.parent
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
EVENTS_PER_SECOND = int(os.environ.get("SOAK_EVENTS_PER_SECOND", "500"))
READS_PER_SECOND = int(os.environ.get("SOAK_READS_PER_SECOND", "50"))
POPULATION, NEW_USERS_PER_SECOND, WARM_UP_EVENTS_PER_USER = 2_000, 10, 10
ITEMS, CATEGORIES = 5_000, 20
WINDOW_SECONDS, RETENTION_SECONDS, LIST_TTL_SECONDS = 60, 90, 60
ID_SHARE, RESEND_SHARE, ATTRIBUTED_SHARE = 0.9, 0.02, 0.1
SAMPLE_SECONDS = 5.0
MAX_GROWTH_RATIO = 0.05
#: The share of the intended events that must have been accepted for the run to count.
MIN_ACCEPTED_SHARE = 0.95


def say(text: str) -> None:
    print(text, flush=True)


def user_id(index: int) -> str:
    return f"soak-{index:06d}"


def item_for(generator: random.Random, user: int) -> str:
    return taste_item(generator, user, ITEMS, CATEGORIES)


class Traffic:
    """The soak's clients: events at a fixed rate, reads at a fixed rate, counted."""

    def __init__(self, http: httpx.AsyncClient, started: float) -> None:
        self.http = http
        self.started = started
        self.random = random.Random(11)
        self.recent: deque[dict[str, object]] = deque(maxlen=2_000)  # for resends
        self.served: dict[str, tuple[str, list[str]]] = {}  # user → (recommendation, items)
        self.counts: Counter[str] = Counter()
        self.behind = 0.0  # how late the latest tick was, at worst

    def active_user(self, elapsed: float) -> int:
        return int(NEW_USERS_PER_SECOND * elapsed) + self.random.randrange(POPULATION)

    def event(self, elapsed: float) -> dict[str, object]:
        generator = self.random
        if self.recent and generator.random() < RESEND_SHARE:
            return generator.choice(self.recent)  # a client resending: a duplicate
        index = self.active_user(elapsed)
        user = user_id(index)
        event: dict[str, object] = {
            "user_id": user,
            "item_id": item_for(generator, index),
            "type": generator.choice(TYPES),
        }
        served = self.served.get(user)
        if served and served[1] and generator.random() < ATTRIBUTED_SHARE:
            event |= {
                "item_id": generator.choice(served[1]),
                "type": "click",
                "recommendation_id": served[0],
            }
        if generator.random() < ID_SHARE:
            event["event_id"] = str(uuid.uuid4())
            self.recent.append(event)
        return event

    async def every(self, per_second: float, duration: float, action: Any) -> None:
        """Call ``action(elapsed)`` ``per_second`` times a second on a fixed schedule (late
        ticks catch up), each as a task of its own, so a slow answer never lowers the rate."""
        period, tick = 1.0 / per_second, 0
        running: set[asyncio.Task[None]] = set()
        while (due := self.started + tick * period) < self.started + duration:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.behind = max(self.behind, -delay)
            task = asyncio.create_task(action(due - self.started))
            running.add(task)
            task.add_done_callback(running.discard)
            tick += 1
        await asyncio.gather(*running)

    async def send_events(self, elapsed: float) -> None:
        batch = [self.event(elapsed) for _ in range(EVENTS_PER_SECOND // 10)]
        self.counts["events sent"] += len(batch)
        try:
            response = await self.http.post("/v1/events", json={"events": batch})
        except httpx.HTTPError:
            self.counts["events failed"] += len(batch)
            return
        if response.status_code == 202:
            body = response.json()
            self.counts["events accepted"] += body["accepted"]
            self.counts["events duplicates"] += body["duplicates"]
        else:
            self.counts[f"events refused ({response.status_code})"] += len(batch)

    async def read(self, elapsed: float) -> None:
        choice, user = self.random.random(), None
        taste = self.random.randrange(CATEGORIES)
        if choice < 0.8:
            user = user_id(self.active_user(elapsed))
            path = f"/v1/users/{user}/recommendations?k=10"
        elif choice < 0.9:
            path = f"/v1/items/popular?k=10&category={category(taste, CATEGORIES)}"
        else:
            path = f"/v1/items/{item_for(self.random, taste)}/similar?k=10"
        try:
            response = await self.http.get(path)
        except httpx.HTTPError:
            self.counts["reads failed"] += 1
            return
        self.counts[f"reads {response.status_code}"] += 1
        if user is not None and response.status_code == 200:
            body = response.json()
            if len(self.served) > 2 * POPULATION:
                self.served.clear()
            self.served[user] = (body["recommendation_id"], [i["item_id"] for i in body["items"]])


def warm_up(stack: testing.Stack) -> str:
    """The catalogue and the first population's history; a model trained on them."""
    generator = random.Random(7)
    now = time.time()
    history = [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user_id(user),
            "item_id": item_for(generator, user),
            "type": generator.choice(TYPES),
            "timestamp": datetime.fromtimestamp(now - generator.random() * 30 * 86_400, UTC)
            .isoformat(),
        }
        for user in range(POPULATION)
        for _ in range(WARM_UP_EVENTS_PER_USER)
    ]  # fmt: skip
    post(stack.gateway, "/v1/items", "items", catalogue(ITEMS, CATEGORIES, "Soak item {}"))
    post(stack.gateway, "/v1/events", "events", history)
    testing.wait_for_applied(stack.gateway, timeout=120)
    return train(stack.gateway, user_id(0))


async def soak(stack: testing.Stack, data: redis.Redis, cache: redis.Redis) -> dict[str, Any]:
    """The traffic, the samples and the censuses, for ``SECONDS``."""
    samples: list[dict[str, float]] = []
    censuses: list[dict[str, Any]] = []
    users_key = keys.Partition(0).users  # the one partition of a single-node data tier

    def sample(elapsed: float) -> None:
        samples.append(
            {
                "t": round(elapsed, 1),
                "data": used_memory(data),
                "ephemeral": used_memory(cache),
                "users": int(data.zcard(users_key)),
            }
        )

    async def sampler(_: float) -> None:
        await asyncio.to_thread(sample, time.monotonic() - started)

    async def take_census(elapsed: float) -> None:
        found = await asyncio.to_thread(census, data)
        found_cache = await asyncio.to_thread(census, cache)
        censuses.append({"t": round(elapsed), "data": found, "ephemeral": found_cache})

    headers = {**testing.client_headers(), "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=stack.gateway, headers=headers, timeout=30, limits=limits
    ) as http:
        started, wall_clock = time.monotonic(), time.time()
        traffic = Traffic(http, started)
        await asyncio.gather(
            traffic.every(10, SECONDS, traffic.send_events),
            traffic.every(READS_PER_SECOND, SECONDS, traffic.read),
            traffic.every(1 / SAMPLE_SECONDS, SECONDS + 0.01, sampler),
            traffic.every(3 / SECONDS, SECONDS, take_census),
        )
        await take_census(time.monotonic() - started)
    return {
        "samples": samples,
        "censuses": censuses,
        "traffic": traffic,
        "new_hour_at": new_hour_at(wall_clock, SECONDS),
    }


def new_hour_at(wall_clock: float, seconds: float) -> float | None:
    """When (seconds into the run) a new hour began, if one did. The drift monitor's
    counters are hourly buckets kept 48 hours (``keys.DRIFT_WINDOW_TTL_SECONDS``, a clock the
    soak cannot shrink): a new hour adds a bucket, a step up that a run crossing the hour in
    its last third counts as growth."""
    boundary = (wall_clock // 3600 + 1) * 3600
    return round(boundary - wall_clock) if boundary < wall_clock + seconds else None


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares growth of memory per minute over ``points`` (seconds, bytes)."""
    times, values = zip(*points, strict=True)
    return statistics.linear_regression(times, values).slope * 60


def verdict(samples: list[dict[str, float]], name: str) -> dict[str, Any]:
    first = [(s["t"], s[name]) for s in samples if s["t"] <= SECONDS / 3]
    last = [(s["t"], s[name]) for s in samples if s["t"] >= 2 * SECONDS / 3]
    early, late = slope_per_minute(first), slope_per_minute(last)
    limit = MAX_GROWTH_RATIO * early if early > 0 else 0.0
    return {
        "first_third_bytes_per_minute": round(early),
        "last_third_bytes_per_minute": round(late),
        "ratio": round(late / early, 4) if early > 0 else None,
        "limit_bytes_per_minute": round(limit),
        "plateau": late <= limit,
    }


def what_grew(censuses: list[dict[str, Any]], name: str) -> list[tuple[str, int, int]]:
    """Families that changed over the last third, from the censuses at 2/3 and at the end."""
    before: dict[str, Family] = censuses[-2][name]
    after: dict[str, Family] = censuses[-1][name]
    return census_growth(before, after)


def report(results: dict[str, Any], censuses: list[dict[str, Any]]) -> None:
    say(f"\nsoak — {results['machine']}, {results['date']}, {SECONDS} s")
    counts = results["traffic"]
    say(
        f"  model: {results['model']}; traffic: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )
    say(f"  the clients' worst lateness: {results['behind_seconds']} s")
    say("  samples (s: data tier MB / ephemeral MB / users known):")
    line = []
    for sample in results["samples"]:
        line.append(
            f"{sample['t']:>5.0f}: {sample['data'] / 1e6:6.2f} / {sample['ephemeral'] / 1e6:5.2f}"
            f" / {sample['users']:>5}"
        )
        if len(line) == 4:
            say("   " + "   ".join(line))
            line = []
    if line:
        say("   " + "   ".join(line))
    if results["new_hour_at_second"] is not None:
        say(
            f"  a new hour began {results['new_hour_at_second']} s into the run: the drift "
            "monitor's hourly buckets (kept 48 h) gained one; past 2/3 of the run, that step "
            "counts as growth (see docs/benchmarks.md, 'Soak')"
        )
    for name, label in (("data", "data tier"), ("ephemeral", "ephemeral Redis")):
        figures = results["verdict"][name]
        say(
            f"  {label}: growth {figures['first_third_bytes_per_minute'] / 1e3:,.1f} kB/min over "
            f"the first third, {figures['last_third_bytes_per_minute'] / 1e3:,.1f} kB/min over "
            f"the last (limit {figures['limit_bytes_per_minute'] / 1e3:,.1f}): "
            + ("plateau" if figures["plateau"] else "STILL GROWING")
        )
        for family, added_keys, added in what_grew(censuses, name)[:6]:
            say(f"      last third: {family:<34} {added_keys:>+7,} keys {added / 1e3:>+9,.1f} kB")


def main() -> None:
    settings = {
        "IDEMPOTENCY_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "USER_RETENTION_DAYS": repr(RETENTION_SECONDS / 86_400),
        "HOUSEKEEPING_INTERVAL_SECONDS": "5",
        "RECOMMENDATION_TTL_SECONDS": str(LIST_TTL_SECONDS),
        "CACHE_TTL_SECONDS": str(LIST_TTL_SECONDS),
    }
    services = ("feature-store", "recommender1", "gateway", "worker")
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as directory,
        running_system(Path(directory), services, **settings) as system,
    ):
        say(f"warming up: {ITEMS:,} items, {POPULATION:,} users' history, a model…")
        model = warm_up(system.stack)
        say(f"soaking {SECONDS} s: {EVENTS_PER_SECOND} events/s, {READS_PER_SECOND} reads/s…")
        run = asyncio.run(soak(system.stack, system.data, system.cache))
        peak = int(system.data.info("memory")["used_memory_peak"])
    traffic: Traffic = run["traffic"]
    counts = dict(sorted(traffic.counts.items()))
    intended = EVENTS_PER_SECOND * SECONDS
    accepted = counts.get("events accepted", 0) + counts.get("events duplicates", 0)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}",
        "seconds": SECONDS,
        "settings": {
            "events_per_second": EVENTS_PER_SECOND,
            "reads_per_second": READS_PER_SECOND,
            "population": POPULATION,
            "new_users_per_second": NEW_USERS_PER_SECOND,
            "idempotency_window_seconds": WINDOW_SECONDS,
            "user_retention_seconds": RETENTION_SECONDS,
            "list_ttl_seconds": LIST_TTL_SECONDS,
            "event_id_share": ID_SHARE,
            "resend_share": RESEND_SHARE,
        },
        "model": model,
        "traffic": counts,
        "accepted_share": round(accepted / intended, 4),
        "behind_seconds": round(traffic.behind, 2),
        "verdict": {name: verdict(run["samples"], name) for name in ("data", "ephemeral")},
        "used_memory_peak": peak,
        "new_hour_at_second": run["new_hour_at"],
        "samples": run["samples"],
        "censuses": [
            {"t": c["t"], "data": census_json(c["data"]), "ephemeral": census_json(c["ephemeral"])}
            for c in run["censuses"]
        ],
    }
    report(results, run["censuses"])
    path = ROOT / "reports" / "soak.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    say(f"  written to {path.relative_to(ROOT)}")
    failures = [name for name, v in results["verdict"].items() if not v["plateau"]]
    if results["accepted_share"] < MIN_ACCEPTED_SHARE:
        failures.append(f"only {results['accepted_share']:.1%} of the events were accepted")
    if failures:
        say("  FAILED: " + "; ".join(failures))
        raise SystemExit(1)
    say("  memory plateaued")


if __name__ == "__main__":
    testing.interrupt_on_sigterm()
    main()
