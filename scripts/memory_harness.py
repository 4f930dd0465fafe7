"""What `make bench-memory` and `make soak` share: a system of their own, loaded and trained
through its public API, and what they read of a Redis's memory.

``used_memory`` (what Redis's allocator holds for data, buffers and scripts: the figure that
meets ``maxmemory``), read once Redis has settled, and a census of every key by family
(``MEMORY USAGE … SAMPLES 0`` summed per family), so a figure that moves can be traced to the
structure that moved it. Families are named from the contract in ``recsys_shared.keys``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from recsys_shared import keys
from recsys_shared.processes import RedisServer
from recsys_shared.testing import (
    Stack,
    admin_headers,
    build_stack,
    client_headers,
    wait_for_task,
)

TYPES = ("view", "view", "view", "click", "click", "add_to_cart", "like", "purchase")
#: Items a bulk import sends at once: the feature-store writes them one script (one fsync)
#: at a time, and 1,000 of them took up to 5 s on a loaded two-core machine, the gateway's
#: timeout for the call.
ITEM_BATCH = 250
EVENT_BATCH = 1_000

#: A partition's keys: ``rs:{p<n>}:`` and what follows.
_PARTITION = re.compile(r"^" + re.escape(keys.PREFIX) + r":\{p\d+\}:(.*)$", re.DOTALL)
_USER_SUFFIXES = {
    keys.USER_ITEMS_SUFFIX: "user items (hash)",
    keys.USER_TIMES_SUFFIX: "user times (zset)",
    keys.USER_META_SUFFIX: "user meta (hash)",
    keys.USER_MARKERS_SUFFIX: "idempotency markers",
}
_PARTITION_FAMILIES = {
    "events": "events stream",
    "dead": "dead letters",
    "stats": "pipeline counters",
    "users": "users by last receipt (zset)",
    "popular": "popularity per partition",
    "popular:dirty": "popularity dirty set",
    "erased": "erasure tombstones",
    "heartbeats": "consumer heartbeats",
}
#: Longest prefix first, so ``…:popular:category:`` is not counted as ``…:popular``.
_PREFIXES = sorted(
    (
        (keys.ITEM_PREFIX, "catalogue items (hashes)"),
        (keys.ITEMS, "catalogue item set"),
        (keys.CATEGORY_PREFIX, "category sets"),
        (keys.POPULAR_CATEGORY_PREFIX, "merged popularity per category"),
        (keys.POPULAR_DIRTY, "catalogue other"),
        (keys.POPULAR, "merged popularity"),
        (keys.CATALOGUE, "catalogue other"),
        (keys.MODELS_BASE, "model registry"),
        (keys.RECOMMENDATION_PREFIX, "served-list records"),
        (keys.CACHE_PREFIX, "cached lists"),
        (keys.RATE_LIMIT_PREFIX, "rate-limit counters"),
        (keys.TASK_RECORD_PREFIX, "task records"),
        (keys.TASK_DELIVERIES_PREFIX, "task records"),
        (keys.REDBEAT_PREFIX, "redbeat"),
        (keys.PREFIX + ":", "reports, locks, counters"),
    ),
    key=lambda pair: -len(pair[0]),
)


def family(name: str) -> str:
    """The family of a key: what it holds, in the words of ``keys.py``."""
    match = _PARTITION.match(name)
    if match:
        return _partition_family(match.group(1))
    for prefix, label in _PREFIXES:
        if name.startswith(prefix):
            return label
    return "celery and other"


def _partition_family(rest: str) -> str:
    if rest.startswith("u:"):
        for suffix, label in _USER_SUFFIXES.items():
            if rest.endswith(suffix):
                return label
    if rest.startswith("drift:"):
        return f"drift {rest.rsplit(':', 1)[-1]} (per hour)"
    if rest.startswith(("accepted:", "applied:")):
        return "throughput per second"
    return _PARTITION_FAMILIES.get(rest, "partition other")


@dataclass
class Family:
    keys: int = 0
    bytes: int = 0


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def settled_used_memory(client: redis.Redis, *, settle: float = 2.5, reads: int = 5) -> int:
    """``used_memory`` once idle clients' buffers have been given back (Redis's client cron
    shrinks an idle query buffer after 2 s): the median of a few reads."""
    time.sleep(settle)
    samples = []
    for _ in range(reads):
        samples.append(used_memory(client))
        time.sleep(0.1)
    return sorted(samples)[len(samples) // 2]


def census(client: redis.Redis) -> dict[str, Family]:
    """Every key's ``MEMORY USAGE`` (exact: every element counted), summed per family."""
    found: dict[str, Family] = {}
    batch: list[str] = []

    def measure() -> None:
        with client.pipeline(transaction=False) as pipe:
            for name in batch:
                pipe.memory_usage(name, samples=0)
            sizes = pipe.execute()
        for name, size in zip(batch, sizes, strict=True):
            if size is None:  # expired between SCAN and MEMORY USAGE
                continue
            entry = found.setdefault(family(name), Family())
            entry.keys += 1
            entry.bytes += int(size)
        batch.clear()

    for raw in client.scan_iter(count=1000):
        batch.append(raw.decode() if isinstance(raw, bytes) else str(raw))
        if len(batch) == 500:
            measure()
    if batch:
        measure()
    return dict(sorted(found.items(), key=lambda pair: -pair[1].bytes))


def census_json(found: dict[str, Family]) -> dict[str, dict[str, int]]:
    return {name: {"keys": entry.keys, "bytes": entry.bytes} for name, entry in found.items()}


def census_growth(
    before: dict[str, Family], after: dict[str, Family]
) -> list[tuple[str, int, int]]:
    """(family, keys added, bytes added) for every family that changed, largest first."""
    changed = []
    for name in set(before) | set(after):
        old, new = before.get(name, Family()), after.get(name, Family())
        if (old.keys, old.bytes) != (new.keys, new.bytes):
            changed.append((name, new.keys - old.keys, new.bytes - old.bytes))
    return sorted(changed, key=lambda row: -abs(row[2]))


def post(gateway: str, path: str, field: str, rows: Sequence[Mapping[str, object]]) -> None:
    """Send ``rows`` in batches (``PUT`` for items, ``POST`` for events); a 503 (backpressure,
    or a slow upstream) is retried after its ``Retry-After``; anything else fails the run."""
    size = ITEM_BATCH if field == "items" else EVENT_BATCH
    with httpx.Client(base_url=gateway, headers=client_headers(), timeout=60) as http:
        for start in range(0, len(rows), size):
            body = {field: rows[start : start + size]}
            for _ in range(20):
                response = (http.put if field == "items" else http.post)(path, json=body)
                if response.status_code != 503:
                    break
                time.sleep(float(response.headers.get("Retry-After", "1")))
            if not response.is_success:
                raise SystemExit(f"{path}: {response.status_code} {response.text}")


@dataclass
class System:
    """A running system and a client of each of its Redis."""

    stack: Stack
    data: redis.Redis
    cache: redis.Redis


@contextmanager
def running_system(workdir: Path, services: Sequence[str], **settings: str) -> Iterator[System]:
    """``services`` started on a durable Redis (AOF, ``appendfsync always``) and an ephemeral
    one of their own, as `make run` has them, with one recommender replica; ``settings`` add
    to the environment. Everything is stopped at the end."""
    server = RedisServer(workdir / "redis").start()
    ephemeral = RedisServer(workdir / "redis-ephemeral", durable=False).start()
    stack = build_stack(
        server, workdir, LOG_LEVEL="WARNING", EPHEMERAL_REDIS_URL=ephemeral.url, **settings
    )
    # One replica: a second adds no CPU on a shared two-core machine, only another process.
    stack.env["RECOMMENDER_URLS"] = stack.url("recommender1")
    data, cache = redis.Redis.from_url(server.url), redis.Redis.from_url(ephemeral.url)
    try:
        for name in services:
            stack.start(name)
        yield System(stack, data, cache)
    finally:
        data.close()
        cache.close()
        stack.close()
        ephemeral.stop()
        server.stop()


def category(index: int, categories: int) -> str:
    return f"category-{index % categories:02d}"


def catalogue(count: int, categories: int, title: str) -> list[dict[str, object]]:
    """Items ``item-00000`` …, one category each; ``title`` formats the index."""
    return [
        {
            "item_id": f"item-{index:05d}",
            "title": title.format(index),
            "categories": [category(index, categories)],
        }
        for index in range(count)
    ]


def taste_item(generator: random.Random, user: int, items: int, categories: int) -> str:
    """An item mostly of the user's own category (a taste a model learns, and passes its
    gate with), favouring the category's popular items."""
    taste = user % categories if generator.random() < 0.9 else generator.randrange(categories)
    rank = int(items // categories * generator.random() ** 2)
    return f"item-{rank * categories + taste:05d}"


def train(gateway: str, user: str) -> str:
    """Train a model (a refit of ALS: no search), then wait until a replica serves it to
    ``user`` (asking for k=5, which no measured list asks for). Returns how it ended."""
    task = httpx.post(
        f"{gateway}/v1/models/retrain",
        json={"algorithm": "als", "search": False},
        headers=admin_headers(),
        timeout=10,
    )
    outcome = wait_for_task(gateway, task.json()["task_id"], timeout=300)
    result = outcome.get("result")
    status = str(result.get("status") if isinstance(result, dict) else outcome.get("state"))
    with httpx.Client(base_url=gateway, headers=client_headers(), timeout=30) as http:
        for _ in range(100):
            response = http.get(f"/v1/users/{user}/recommendations?k=5")
            if response.is_success and response.json()["strategy"] == "personalized":
                break
            time.sleep(0.3)
    return status
