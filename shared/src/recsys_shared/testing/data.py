"""Synthetic data sets with a known answer, for tests and benchmarks."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

_CLUSTER_NAMES = (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon",
)  # fmt: skip


def taste_clusters(
    *,
    clusters: int = 2,
    users_per_cluster: int = 40,
    items_per_cluster: int = 30,
    events_per_user: int = 12,
    seed: int = 7,
    days: float = 30.0,
    now: float | None = None,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Taste clusters: users ``a*`` interact only with items ``A*`` (category "alpha"), users
    ``b*`` only with ``B*`` ("beta"), and so on for up to 20 clusters. Returns (items, events),
    events spread over
    ``days`` up to ``now`` so a time-ordered holdout has recent interactions to judge."""
    generator = random.Random(seed)
    end = now if now is not None else time.time() - 60
    items: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    for index, category in enumerate(_CLUSTER_NAMES[:clusters]):
        cluster = chr(ord("a") + index)
        catalogue = [f"{cluster.upper()}{index}" for index in range(items_per_cluster)]
        items += [
            {"item_id": item, "title": f"{category.title()} item {item}", "categories": [category]}
            for item in catalogue
        ]
        # A skewed choice, so some items are popular within the cluster, as in real data.
        weights = [1.0 / (rank + 1) ** 0.7 for rank in range(items_per_cluster)]
        for user_index in range(users_per_cluster):
            user = f"{cluster}{user_index}"
            chosen: set[str] = set()
            while len(chosen) < events_per_user:
                chosen.add(generator.choices(catalogue, weights)[0])
            for item in sorted(chosen):
                moment = end - generator.random() * days * 86_400
                events.append(
                    {
                        "event_id": f"{user}-{item}",
                        "user_id": user,
                        "item_id": item,
                        "type": "like",
                        "timestamp": datetime.fromtimestamp(moment, UTC).isoformat(),
                    }
                )
    return items, events


def view_batch(batch: str, users: str, item_id: str, count: int) -> list[dict[str, object]]:
    """``count`` views of ``item_id``, one by each of the users ``<users>0``, ``<users>1``, …,
    with the event ids ``<batch>-0``, …: load in which every event is new, so that each one
    accepted can be looked for afterwards."""
    return [
        {
            "event_id": f"{batch}-{index}",
            "user_id": f"{users}{index}",
            "item_id": item_id,
            "type": "view",
        }
        for index in range(count)
    ]
