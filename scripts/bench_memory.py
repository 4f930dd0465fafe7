"""`make bench-memory`: what the data tier and the ephemeral Redis hold per event, user, item
and list, measured through the public API of systems it starts, so a sizing guide can be
computed from them (docs/deploy.md, "Sizing").

Three systems, each on a fresh redis-server of its own (AOF, ``appendfsync always``, as `make
run` has it) with a second one without persistence for cached lists and records; each gets
the same catalogue (10,000 items) and the same 100,000 events over 1,000 users, through
``POST /v1/events`` in batches of 1,000, in one shuffled order:

- ``ids``: every event with a 36-character ``event_id`` (a UUID);
- ``none``: the same events without one (no marker is kept for them);
- ``mix``: half of each user's events with their id.

Once the consumers have applied and trimmed everything, each system's growth of
``used_memory`` (from just before the first event) is read; the bytes per remembered event
are (growth with ids − growth without) / 100,000, and must be at most 40 (exit 1 above). A
census of every key by family (``MEMORY USAGE``) gives the per-user, per-item and per-hour
figures. The ``none`` system then measures a stream backlog (the feature-store stopped) and
users with 10, 100 and 1,000 items of history (the last past Redis's compact encodings); the
``ids`` system trains a model (a refit of ALS, no search), runs a drift check and measures a
served-list record and a cached list on the ephemeral Redis, and the registry's and reports'
records. Prints the figures and writes reports/bench-memory.json. About two minutes on an
idle two-core machine (four and a half on a busy one).
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from memory_harness import (
    TYPES,
    Family,
    System,
    catalogue,
    census,
    census_json,
    post,
    running_system,
    settled_used_memory,
    taste_item,
    train,
)

from recsys_shared import keys, testing
from recsys_shared.testing import admin_headers, client_headers, wait_for_applied, wait_for_task

ROOT = Path(__file__).resolve().parent.parent
EVENTS, USERS, ITEMS, CATEGORIES = 100_000, 1_000, 10_000, 20
LIMIT_BYTES_PER_MARKER = 40
BACKLOG_EVENTS = 20_000
HISTORY_USERS, HISTORIES = 20, (10, 100, 1_000)
LISTS, K = 1_000, 10
TITLE = "Item number {} of the benchmark catalogue"  # about 45 characters
STARTED = time.monotonic()


def say(text: str) -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    say(f"  [{time.monotonic() - STARTED:4.0f} s] {text}")


def events(kind: str) -> list[dict[str, object]]:
    """The same events whatever ``kind``; only which of them carry an ``event_id`` differs.
    Each user keeps mostly to one category (a taste a model can learn and pass its gate
    with), favouring its popular items, over the last 30 days."""
    generator = random.Random(15)
    end = datetime.now(UTC).timestamp() - 60
    out: list[dict[str, object]] = []
    for index in range(EVENTS):
        user = index % USERS
        event: dict[str, object] = {
            "user_id": f"user-{user:04d}",
            "item_id": taste_item(generator, user, ITEMS, CATEGORIES),
            "type": generator.choice(TYPES),
            "timestamp": datetime.fromtimestamp(
                end - generator.random() * 30 * 86_400, UTC
            ).isoformat(),
        }
        event_id = str(uuid.UUID(int=generator.getrandbits(128), version=4))
        # The mix: each user sends half of their events with an id.
        if kind == "ids" or (kind == "mix" and (index // USERS) % 2 == 0):
            event["event_id"] = event_id
        out.append(event)
    random.Random(16).shuffle(out)
    return out


def measure_system(workdir: Path, kind: str) -> dict[str, Any]:
    """One system: catalogue, the 100,000 events, then this kind's extra phases."""
    progress(f"system '{kind}': catalogue and {EVENTS:,} events")
    # One API key sends everything: its rate limit would only add counters to the census.
    services = ("feature-store", "gateway")
    with running_system(workdir / kind, services, RATE_LIMIT_PER_SECOND="0") as sys_:
        gateway = sys_.stack.gateway
        before_items = settled_used_memory(sys_.data)
        post(gateway, "/v1/items", "items", catalogue(ITEMS, CATEGORIES, TITLE))
        progress("catalogue in")
        before = settled_used_memory(sys_.data)
        sent = events(kind)
        post(gateway, "/v1/events", "events", sent)
        progress("events accepted")
        wait_for_applied(gateway, timeout=300, trimmed=True)
        after = settled_used_memory(sys_.data)
        found = census(sys_.data)
        result: dict[str, Any] = {
            "redis_version": sys_.data.info("server")["redis_version"],
            "events": EVENTS,
            "remembered": sum(1 for event in sent if "event_id" in event),
            "catalogue_bytes_per_item": round((before - before_items) / ITEMS, 1),
            "used_memory_before": before,
            "used_memory_after": after,
            "growth_bytes": after - before,
            "growth_per_event": round((after - before) / EVENTS, 1),
            "census": census_json(found),
            "per_unit": per_unit(sys_.data, found, sent),
        }
        progress(f"system '{kind}': applied and trimmed, census taken")
        if kind == "none":
            result["backlog"] = backlog(sys_)
            result["histories"] = histories(sys_)
        if kind == "ids":
            result["lists"] = served_lists(sys_)
    return result


def per_unit(
    client: redis.Redis, found: dict[str, Family], sent: list[dict[str, Any]]
) -> dict[str, float]:
    """Bytes per user, per history entry, per item and per hourly drift field, from the census."""

    def size(*families: str) -> int:
        return sum(found[name].bytes for name in families if name in found)

    history = len({(event["user_id"], event["item_id"]) for event in sent})
    partition = keys.Partition(0)
    hour = keys.drift_hour(datetime.now(UTC).timestamp())
    drift = partition.drift(hour)
    users_in_drift = int(client.hlen(drift.users)) or 1
    items_in_drift = int(client.hlen(drift.items)) or 1
    popular_items = int(client.zcard(keys.POPULAR)) or 1
    return {
        "history_entries_per_user": round(history / USERS, 1),
        "user_features_per_user": round(
            size("user items (hash)", "user times (zset)", "user meta (hash)") / USERS
        ),
        "user_meta_per_user": round(size("user meta (hash)") / USERS),
        "history_bytes_per_entry_compact": round(
            size("user items (hash)", "user times (zset)") / history, 1
        ),
        "membership_per_user": round(size("users by last receipt (zset)") / USERS, 1),
        "drift_users_per_user_hour": round(size("drift users (per hour)") / users_in_drift, 1),
        "drift_items_per_item_hour": round(size("drift items (per hour)") / items_in_drift, 1),
        "catalogue_census_per_item": round(
            size("catalogue items (hashes)", "catalogue item set", "category sets") / ITEMS, 1
        ),
        "popularity_per_item": round(
            size(
                "merged popularity",
                "merged popularity per category",
                "popularity per partition",
            )
            / popular_items,
            1,
        ),
        "markers_per_remembered_event": round(
            size("idempotency markers") / max(1, sum("event_id" in event for event in sent)), 1
        ),
    }


def backlog(sys_: System) -> dict[str, Any]:
    """Events waiting in the stream, the consumers stopped: bytes per entry."""
    progress(f"a backlog of {BACKLOG_EVENTS:,} events")
    sys_.stack.stop("feature-store")
    before = settled_used_memory(sys_.data)
    generator = random.Random(17)
    waiting = [
        {
            "user_id": f"user-{generator.randrange(USERS):04d}",
            "item_id": f"item-{generator.randrange(ITEMS):05d}",
            "type": generator.choice(TYPES),
        }
        for _ in range(BACKLOG_EVENTS)
    ]
    post(sys_.stack.gateway, "/v1/events", "events", waiting)
    after = settled_used_memory(sys_.data)
    stream = census(sys_.data).get("events stream", Family())
    sys_.stack.start("feature-store")
    wait_for_applied(sys_.stack.gateway, timeout=300, trimmed=True)
    return {
        "events": BACKLOG_EVENTS,
        "bytes_per_entry": round((after - before) / BACKLOG_EVENTS, 1),
        "stream_census_bytes_per_entry": round(stream.bytes / BACKLOG_EVENTS, 1),
    }


def histories(sys_: System) -> dict[str, Any]:
    """Users with 10, 100 and 1,000 distinct items (fresh users, 20 of each): their feature
    keys' bytes. Past 128 entries Redis leaves the compact encoding of hashes and sorted sets."""
    progress(f"users with {', '.join(map(str, HISTORIES))} items of history")
    partition, result = keys.Partition(0), {}
    for size in HISTORIES:
        users = [f"h{size}-{user:02d}" for user in range(HISTORY_USERS)]
        sent = [
            {"user_id": user, "item_id": f"item-{item:05d}", "type": "view"}
            for user in users
            for item in range(0, ITEMS, ITEMS // size)
        ]
        before = settled_used_memory(sys_.data)
        post(sys_.stack.gateway, "/v1/events", "events", sent)
        wait_for_applied(sys_.stack.gateway, timeout=300, trimmed=True)
        after = settled_used_memory(sys_.data)
        feature_bytes = sum(
            int(sys_.data.memory_usage(name, samples=0) or 0)
            for user in users
            for name in partition.user_keys(user)[:3]  # items, times, meta
        )
        result[str(size)] = {
            "features_per_user": round(feature_bytes / len(users)),
            "bytes_per_entry": round(feature_bytes / len(sent), 1),
            "growth_per_entry": round((after - before) / len(sent), 1),
        }
    small, medium, large = (result[str(size)]["features_per_user"] for size in HISTORIES)
    compact = (medium - small) / (HISTORIES[1] - HISTORIES[0])
    return {
        "by_history": result,
        "compact_bytes_per_entry": round(compact, 1),
        "fixed_bytes_per_user": round(small - compact * HISTORIES[0]),
        "large_bytes_per_entry": round(large / HISTORIES[2], 1),
    }


def served_lists(sys_: System) -> dict[str, Any]:
    """Train a model, then one uncached list per user: a record and a cached list each."""
    progress("training a model for the served lists")
    stack = sys_.stack
    stack.start("worker")
    stack.start("recommender1")
    gateway = stack.gateway
    status = train(gateway, "user-0000")
    task = httpx.post(f"{gateway}/v1/drift/check", headers=admin_headers(), timeout=10)
    wait_for_task(gateway, task.json()["task_id"], timeout=120)
    strategies: list[str] = []
    with httpx.Client(base_url=gateway, headers=client_headers(), timeout=30) as http:
        progress(f"{LISTS:,} lists")
        before = settled_used_memory(sys_.cache)
        for user in range(LISTS):
            response = http.get(f"/v1/users/user-{user % USERS:04d}/recommendations?k={K}")
            strategies.append(
                response.json()["strategy"] if response.is_success else str(response.status_code)
            )
    after = settled_used_memory(sys_.cache)
    found = census(sys_.cache)
    records, cached = found.get("served-list records", Family()), found.get("cached lists")
    return {
        "training": status,
        "lists": LISTS,
        "k": K,
        "personalized_share": round(strategies.count("personalized") / LISTS, 3),
        "ephemeral_growth_per_list": round((after - before) / LISTS, 1),
        "record_bytes": round(records.bytes / max(1, records.keys), 1),
        "cached_list_bytes": round(cached.bytes / max(1, cached.keys), 1) if cached else None,
        "census": census_json(found),
        **registry_and_reports(sys_.data),
    }


def registry_and_reports(client: redis.Redis) -> dict[str, Any]:
    """After one training (a refit, no search) and one drift check: what each record costs."""
    found = census(client)
    versions = int(client.zcard(keys.MODELS)) or 1

    def usage(name: str) -> int:
        return int(client.memory_usage(name, samples=0) or 0)

    return {
        "registry_bytes_per_version": round(found["model registry"].bytes / versions),
        "drift_report_bytes": usage(keys.DRIFT_HISTORY),
        "snapshot_report_bytes": usage(keys.SNAPSHOT_LATEST),
    }


def figures(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ids, none, mix = runs["ids"], runs["none"], runs["mix"]
    marker = (ids["growth_bytes"] - none["growth_bytes"]) / EVENTS
    mix_marker = (mix["growth_bytes"] - none["growth_bytes"]) / mix["remembered"]
    units = none["per_unit"]
    return {
        "bytes_per_remembered_event": round(marker, 1),
        "limit_bytes_per_remembered_event": LIMIT_BYTES_PER_MARKER,
        "bytes_per_remembered_event_in_the_mix": round(mix_marker, 1),
        "markers_census_bytes_per_event": ids["per_unit"]["markers_per_remembered_event"],
        "growth_per_event": {kind: run["growth_per_event"] for kind, run in runs.items()},
        "catalogue_bytes_per_item": statistics.median(
            run["catalogue_bytes_per_item"] for run in runs.values()
        ),
        **{key: value for key, value in units.items() if key != "markers_per_remembered_event"},
        "stream_entry_waiting": none["backlog"]["bytes_per_entry"],
        "histories": none["histories"],
        "served_lists": ids["lists"],
    }


def report(results: dict[str, Any]) -> None:
    f = results["figures"]
    lists, history = f["served_lists"], f["histories"]
    by_size = history["by_history"]
    verdict = "ok" if f["bytes_per_remembered_event"] <= LIMIT_BYTES_PER_MARKER else "TOO MANY"
    growth = f["growth_per_event"]
    rows = [
        (
            "bytes per remembered event (ids − none) / 100,000",
            f"{f['bytes_per_remembered_event']}  (limit {LIMIT_BYTES_PER_MARKER}: {verdict})",
        ),
        ("  the same from the mix (half with ids)", f["bytes_per_remembered_event_in_the_mix"]),
        ("  the markers' own keys (MEMORY USAGE)", f["markers_census_bytes_per_event"]),
        (
            "Redis growth per event: ids / mix / none",
            f"{growth['ids']} / {growth['mix']} / {growth['none']}",
        ),
        (
            f"features per user ({f['history_entries_per_user']} items of history)",
            f"{f['user_features_per_user']} (meta {f['user_meta_per_user']}, "
            f"{f['history_bytes_per_entry_compact']} per history entry)",
        ),
        (
            "  users with 10 / 100 / 1,000 items",
            " / ".join(f"{by_size[size]['features_per_user']:,}" for size in by_size),
        ),
        (
            "  so: fixed + per entry while ≤ 128 entries / past 128",
            f"{history['fixed_bytes_per_user']} + {history['compact_bytes_per_entry']} × h / "
            f"{history['large_bytes_per_entry']} × h",
        ),
        ("  membership (users by last receipt)", f["membership_per_user"]),
        ("  drift: per user and hour active", f["drift_users_per_user_hour"]),
        ("per item: catalogue (title, 1 category)", f["catalogue_bytes_per_item"]),
        ("  merged + per-partition popularity", f["popularity_per_item"]),
        ("  drift: per item and hour", f["drift_items_per_item_hour"]),
        ("per stream entry waiting to be applied", f["stream_entry_waiting"]),
        (f"ephemeral: per served list (k={lists['k']})", lists["ephemeral_growth_per_list"]),
        (
            "  served-list record / cached list",
            f"{lists['record_bytes']} / {lists['cached_list_bytes']}",
        ),
        ("registry: per model version (a refit's lineage)", lists["registry_bytes_per_version"]),
        (
            "  one drift report / the last snapshot's report",
            f"{lists['drift_report_bytes']} / {lists['snapshot_report_bytes']}",
        ),
    ]
    say(f"\nmemory benchmark — {results['machine']}, {results['date']}, bytes")
    for label, value in rows:
        say(f"  {label + ':':<58}{value}")
    say(
        f"  (lists: model {lists['training']}, {lists['personalized_share']:.0%} personalised; "
        f"redis {results['redis_version']})"
    )


def main() -> None:
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as directory:
        for kind in ("ids", "none", "mix"):
            runs[kind] = measure_system(Path(directory), kind)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}",
        "redis_version": runs["ids"]["redis_version"],
        "figures": figures(runs),
        "runs": runs,
    }
    report(results)
    path = ROOT / "reports" / "bench-memory.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    say(f"  written to {path.relative_to(ROOT)}")
    if results["figures"]["bytes_per_remembered_event"] > LIMIT_BYTES_PER_MARKER:
        raise SystemExit(1)


if __name__ == "__main__":
    testing.interrupt_on_sigterm()
    main()
