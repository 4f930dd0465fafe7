"""`make experiment-demo`: two canaries decided by a simulated population's clicks.

Starts a system of its own (a redis-server, the gateway, two recommenders, the feature-store
and the Celery worker, on free loopback ports), loads users with hidden tastes (user ``a7``
likes ``A*`` items: ``taste_clusters``), trains a model on them through the API (the good
version) and registers a deliberately worse copy (its items' names shuffled, status
``rejected``: an offline-rejected version may still be tried online). Then, while the
population asks for lists and clicks what suits it (``Population``: every event sent twice,
as a retrying client would):

(a) the worse version as the canary of the good one: rolled back;
(b) the worse version active (a copy registered as a candidate, since the API will not
    activate a rejected one) and the good one as its canary: promoted through the schedule.

For each it prints the decision, the reason, the exposures it needed, the schedule's steps
with their times and whether the counters equal what the population did; the figures go to
reports/experiment-demo.json and the chart to reports/experiment-demo.png (copied to
docs/img/ for docs/experiments.md). Bounded: each canary stops after EXPERIMENT_DEMO_VISITS
visits or EXPERIMENT_DEMO_SECONDS seconds without a decision, and the demo fails.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiment_chart import chart

from recsys_shared.schemas import ModelStatus
from recsys_shared.testing import (
    Stack,
    admin_headers,
    interrupt_on_sigterm,
    load,
    own_stack,
    retrain,
    taste_clusters,
    wait_for_applied,
)
from recsys_shared.testing.experiments import (
    Population,
    experiment,
    scrambled_version,
    settle,
)

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = 4
USERS_PER_CLUSTER = 100
#: Canary lists per step before it moves up (the API's default is 500; a demo has minutes).
MIN_EXPOSURES = 100
MAX_VISITS = int(os.environ.get("EXPERIMENT_DEMO_VISITS", "8000"))
MAX_SECONDS = float(os.environ.get("EXPERIMENT_DEMO_SECONDS", "240"))
#: Visits between two reads of the experiment's report (one point of the chart).
POLL_EVERY = 20
SCRAMBLE_SEED = 5


@dataclass
class Point:
    """The experiment as its report stood at one moment."""

    seconds: float
    visits: int
    exposures: int
    canary_exposures: int
    share: float
    difference: float | None
    low: float | None
    high: float | None


@dataclass
class Canary:
    label: str
    control: int
    canary: int
    points: list[Point] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    visits: int = 0
    counted_exactly: bool = False


def main() -> None:
    started = time.monotonic()
    items, events = taste_clusters(
        clusters=CLUSTERS, users_per_cluster=USERS_PER_CLUSTER, events_per_user=8
    )
    users = sorted({str(event["user_id"]) for event in events})
    with (
        tempfile.TemporaryDirectory(prefix="experiment-demo-") as workdir,
        own_stack(
            Path(workdir),
            ("feature-store", "recommender1", "recommender2", "gateway", "worker"),
            LOG_LEVEL="WARNING",
            # The decider looks every half second (default 2 s), so the exposures a decision
            # needed are not inflated by the population's speed.
            EXPERIMENT_CHECK_SECONDS="0.5",
            EXPERIMENT_REFRESH_SECONDS="0.5",
        ) as stack,
        httpx.Client(base_url=stack.gateway, timeout=30) as http,
    ):
        print(f"system up in {time.monotonic() - started:.0f} s; gateway {stack.gateway}")
        good = train(http, stack, items, events)
        worse = scrambled_version(
            stack.tier.url, stack.env["ARTIFACT_URL"], good, seed=SCRAMBLE_SEED
        )
        print(
            f"version {worse}: a scrambled copy of version {good} (every item answers to "
            "another's name), status rejected"
        )
        population = Population(users, seed=21)
        first = run_canary(http, stack, population, good, worse, "(a) worse canary")
        summarise(http, first)
        second = second_canary(http, stack, users, good, worse)
        summarise(http, second)
    runs = [first, second]
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "experiment-demo.json").write_text(json.dumps([asdict(r) for r in runs], indent=2))
    chart([asdict(run) for run in runs], reports / "experiment-demo.png")
    print(
        f"\nwritten to reports/experiment-demo.json and reports/experiment-demo.png "
        f"({time.monotonic() - started:.0f} s in all)"
    )


def train(
    http: httpx.Client,
    stack: Stack,
    items: list[dict[str, object]],
    events: list[dict[str, object]],
) -> int:
    """The catalogue and the population's history through the API, then one training."""
    load(stack.gateway, items, events, timeout=60)
    print(
        f"{len(items)} items, {len(events)} events of {CLUSTERS * USERS_PER_CLUSTER} users; "
        "training…"
    )
    clock = time.monotonic()
    version = int(str(retrain(stack.gateway, timeout=300)["version"]))
    info = http.get("/v1/models/active", headers=admin_headers()).json()
    print(
        f"version {version} trained and active in {time.monotonic() - clock:.0f} s "
        f"(recipe {info['algorithm']}, precision@10 "
        f"{info['metrics'].get('precision_at_10', float('nan')):.3f} on the holdout)"
    )
    return version


def second_canary(
    http: httpx.Client, stack: Stack, users: list[str], good: int, rejected: int
) -> Canary:
    """(b): the worse version serves everyone, and the good one comes in as its canary."""
    refused = http.post(f"/v1/models/{rejected}/activate", headers=admin_headers())
    print(f"\nactivating the rejected copy: {refused.status_code} {refused.json()['detail']}")
    worse = scrambled_version(
        stack.tier.url,
        stack.env["ARTIFACT_URL"],
        good,
        status=ModelStatus.CANDIDATE,
        seed=SCRAMBLE_SEED,
    )
    http.post(f"/v1/models/{worse}/activate", headers=admin_headers()).raise_for_status()
    print(f"version {worse}: the same scrambled copy as a candidate, activated: it serves everyone")
    return run_canary(http, stack, Population(users, seed=33), worse, good, "(b) better canary")


def run_canary(
    http: httpx.Client,
    stack: Stack,
    population: Population,
    control: int,
    canary: int,
    label: str,
) -> Canary:
    """Start a canary of ``canary`` against ``control`` and let the population visit until
    it is decided (or the bounds are reached: the experiment is stopped, the demo fails)."""
    run = Canary(label, control, canary)
    response = http.post(
        "/v1/experiments",
        json={
            "name": label,
            "mode": "canary",
            "variants": [{"model_version": control}, {"model_version": canary}],
            "metric": "ctr",
            "min_exposures": MIN_EXPOSURES,
            "max_duration_seconds": 600,
        },
        headers=admin_headers(),
    )
    if response.status_code != 201:
        raise SystemExit(f"{label}: the experiment was refused: {response.text}")
    experiment_id = response.json()["id"]
    share = response.json()["variants"][1]["share"]
    print(
        f"\n{label}: experiment {experiment_id}, control v{control}, canary v{canary}, "
        f"metric ctr, min_exposures {MIN_EXPOSURES}; canary share {share:.0%}"
    )
    clock = time.monotonic()
    visitors = visiting_order(population.users, population.seed)
    while True:
        for user in itertools.islice(visitors, POLL_EVERY):
            population.visit(http, user)
        run.visits += POLL_EVERY
        report = experiment(http, experiment_id)
        point = _point(report, time.monotonic() - clock, run.visits)
        run.points.append(point)
        if point.share != share:
            print(
                f"  +{point.seconds:5.1f} s  canary share {share:.0%} → {point.share:.0%}  "
                f"({point.exposures:,} exposures, {point.canary_exposures:,} of them the canary's)"
            )
            share = point.share
        if report["decision"] != "running":
            break
        if run.visits >= MAX_VISITS or point.seconds >= MAX_SECONDS:
            http.post(f"/v1/experiments/{experiment_id}/stop", headers=admin_headers())
            raise SystemExit(f"{label}: no decision after {run.visits} visits: {report}")
    run.seconds = time.monotonic() - clock
    # The final report once every event is applied, and whether its counters are exact.
    wait_for_applied(stack.gateway, timeout=60)
    settled = settle(http, population, experiment_id)
    run.report, run.counted_exactly = settled.report, settled.exact
    return run


def visiting_order(users: list[str], seed: int) -> Iterator[str]:
    """Every user once per round, each round in a new random order."""
    generator = random.Random(seed)
    while True:
        order = list(users)
        generator.shuffle(order)
        yield from order


def _point(report: dict[str, Any], seconds: float, visits: int) -> Point:
    control, canary = report["variants"]
    interval = canary["difference_interval"] or {}
    return Point(
        seconds=round(seconds, 2),
        visits=visits,
        exposures=control["exposures"] + canary["exposures"],
        canary_exposures=canary["exposures"],
        share=canary["share"],
        difference=canary["difference"],
        low=interval.get("low"),
        high=interval.get("high"),
    )


def summarise(http: httpx.Client, run: Canary) -> None:
    report = run.report
    control, canary = report["variants"]
    total = control["exposures"] + canary["exposures"]
    created = datetime.fromisoformat(report["created_at"])
    print(
        f"\n{run.label}: {report['decision'].upper()} after {run.seconds:.1f} s, "
        f"{run.visits:,} visits"
    )
    print(f"  reason: {report['reason']}")
    print(
        f"  exposures: control {control['exposures']:,}, canary {canary['exposures']:,}, "
        f"{total:,} in all; the canary had {canary['exposures'] / total:.1%} of them"
    )
    for variant in (control, canary):
        low, high = variant["interval"]["low"], variant["interval"]["high"]
        print(
            f"  {variant['name']:<7} v{variant['model_version']}: ctr {variant['rate']:.3f} "
            f"(95% {low:.3f}…{high:.3f}), {variant['clicks']:,} clicks, "
            f"{variant['conversions']:,} purchases"
        )
    print("  steps:")
    for step in report["steps"]:
        offset = (datetime.fromisoformat(step["at"]) - created).total_seconds()
        print(f"    +{offset:5.1f} s  canary {step['shares'][1]:>4.0%}  {step['note']}")
    verdict = "yes" if run.counted_exactly else "NO"
    print(f"  counters equal what the population did (every event sent twice): {verdict}")
    models = {m["version"]: m for m in http.get("/v1/models", headers=admin_headers()).json()}
    (active,) = [m for m in models.values() if m["status"] == "active"]
    print(f"  active version now: v{active['version']} ({active['status_reason']})")
    noted = ", ".join(
        f"v{v} {len(models[v]['experiment_notes'])}" for v in (run.control, run.canary)
    )
    print(f"  notes in the registry lineage (GET /v1/models, experiment_notes): {noted}")


if __name__ == "__main__":
    interrupt_on_sigterm()
    try:
        main()
    except KeyboardInterrupt:  # after the `with` blocks stopped every process
        sys.exit("interrupted; the processes it started are stopped")
