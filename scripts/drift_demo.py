"""`make drift-demo`: MovieLens replayed in time order, window by window, through a real system.

Starts its own Redis, gateway, recommender, feature-store and Celery worker; trains on the
oldest 40% of the ratings; then sends the rest as six windows of time. In each window, for a
sample of its ratings the user's recommendations are asked for first and the rating carries
their recommendation_id (so the online hit rate is measured), and every rating goes in through
POST /v1/events. Then the drift monitor runs (POST /v1/drift/check): when the window has moved
away from the training data it triggers a retrain, which goes through the gate, and a passing
model is promoted. Prints a table and draws reports/drift-demo.png (copy it to docs/img/).

Twenty years of ratings are compressed into minutes, so each window is one pass of the
monitor: before a window the demo clears the monitor's current hour bucket, which in
production would simply be a later hour.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import catalogue, movielens, rating_events

from recsys_shared import keys, testing

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = int(os.environ.get("DRIFT_DEMO_WINDOWS", "6"))
SAMPLE = int(os.environ.get("DRIFT_DEMO_SAMPLE", "300"))


def send(http: httpx.Client, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        response = http.post("/v1/events", json={"events": events[start : start + 1000]})
        response.raise_for_status()


def attach_recommendations(
    http: httpx.Client, events: list[dict[str, Any]], generator: random.Random
) -> None:
    """For a sample of the window's ratings, ask for the user's list first, as a client would."""
    for event in generator.sample(events, min(SAMPLE, len(events))):
        listed = http.get(f"/v1/users/{event['user_id']}/recommendations", params={"k": 10})
        if listed.status_code == 200:
            event["recommendation_id"] = listed.json()["recommendation_id"]


def clear_monitor_window(redis_url: str, partitions: int) -> None:
    """Forget this hour's recent-traffic counters in every partition (one DEL per partition:
    a partition's keys share its hash tag)."""
    client = redis.Redis.from_url(redis_url)
    try:
        hour = keys.drift_hour(time.time())
        for partition in keys.Partitions(partitions).all:
            bucket = partition.drift(hour)
            client.delete(bucket.items, bucket.users, bucket.types, bucket.hits)
    finally:
        client.close()


def active_precision(http: httpx.Client) -> tuple[int | None, float | None]:
    response = http.get("/v1/models/active", headers=testing.admin_headers())
    if response.status_code != 200:
        return None, None
    info = response.json()
    return info["version"], info["metrics"].get("precision_at_10")


def main() -> None:
    frame = movielens()
    events = rating_events(frame)
    cut = int(len(events) * 0.4)
    size = (len(events) - cut) // WINDOWS
    windows = [events[cut + index * size : cut + (index + 1) * size] for index in range(WINDOWS)]
    generator = random.Random(11)
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="drift-demo-") as workdir,
        testing.own_stack(
            Path(workdir),
            ("feature-store", "recommender1", "gateway", "worker"),
            LOG_LEVEL="WARNING",
            DRIFT_WINDOW_HOURS="1",
            DRIFT_MIN_EVENTS="500",
            DRIFT_COOLDOWN_SECONDS="1",
            RATE_LIMIT_PER_SECOND="0",
        ) as stack,
        httpx.Client(base_url=stack.gateway, headers=testing.client_headers(), timeout=60) as http,
    ):
        items = catalogue(frame)
        for start in range(0, len(items), 1000):
            http.put("/v1/items", json={"items": items[start : start + 1000]}).raise_for_status()
        print(f"training on the oldest {cut:,} ratings…", flush=True)
        send(http, events[:cut])
        testing.wait_for_applied(stack.gateway, timeout=120)
        retrain = http.post("/v1/models/retrain", json={}, headers=testing.admin_headers())
        task = retrain.json()["task_id"]
        testing.wait_for_task(stack.gateway, task, timeout=300)
        for number, window in enumerate(windows, start=1):
            clear_monitor_window(stack.redis.url, stack.tier.partitions)
            version_before, _ = active_precision(http)
            attach_recommendations(http, window, generator)
            send(http, window)
            testing.wait_for_applied(stack.gateway, timeout=120)
            check = http.post("/v1/drift/check", headers=testing.admin_headers()).json()["task_id"]
            report = testing.wait_for_task(stack.gateway, check, timeout=120)["result"]
            assert isinstance(report, dict)
            outcome = "-"
            if report.get("triggered_task_id"):
                trained = testing.wait_for_task(
                    stack.gateway, report["triggered_task_id"], timeout=300
                )
                outcome = (trained.get("result") or {}).get("status", trained["state"])
            version_after, precision = active_precision(http)
            rate = report.get("hit_rate", {}).get(str(version_before), {}).get("hit_rate")
            row = {
                "window": number,
                "from": window[0]["timestamp"][:10],
                "to": window[-1]["timestamp"][:10],
                "status": report["status"],
                "psi": report.get("psi"),
                "unknown_users": report.get("unknown_user_share"),
                "hit_rate": rate,
                "retrain": outcome,
                "version": version_after,
                "precision_at_10": precision,
            }
            rows.append(row)
            print(
                f"window {number} ({row['from']} .. {row['to']}): {row['status']:<17} "
                f"PSI {_fmt(row['psi'])}  unknown users {_fmt(row['unknown_users'])}  "
                f"hit rate {_fmt(row['hit_rate'])}  retrain {outcome:<10} "
                f"serving v{version_after} (precision@10 {_fmt(precision)})",
                flush=True,
            )
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "drift-demo.json").write_text(json.dumps(rows, indent=2))
    chart(rows, reports / "drift-demo.png")
    print("written to reports/drift-demo.json and reports/drift-demo.png", flush=True)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = [row["window"] for row in rows]
    figure, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    series = (
        ("precision_at_10", "offline precision@10 of the served model"),
        ("psi", "PSI of item popularity vs training data"),
        ("hit_rate", "online hit rate of served lists"),
    )
    for axis, (name, title) in zip(axes, series, strict=True):
        values = [row[name] if row[name] is not None else float("nan") for row in rows]
        axis.plot(windows, values, marker="o")
        axis.set_title(title, fontsize=10)
        for row in rows:
            if row["retrain"] == "published":
                axis.axvline(row["window"], color="tab:green", alpha=0.25)
    axes[-1].set_xlabel("window (time order); green: drift triggered a retrain that was promoted")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


if __name__ == "__main__":
    testing.interrupt_on_sigterm()
    main()
