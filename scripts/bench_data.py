"""The data sets `make bench` loads through the public API, each trained until it is served.

Synthetic: twenty taste clusters of 250 users (personalisation matters, global popularity is
weak, as in real data), trained as ALS. MovieLens: the demo of `make run`, loaded by the same code
(scripts/demo.py: 9,066 movies, 100,004 ratings of 671 users, then one training with the
worker's own search budget).
"""

from __future__ import annotations

import threading

import demo
import httpx
from bench_wrk import say

from recsys_shared.processes import wait_until
from recsys_shared.testing import (
    Stack,
    admin_headers,
    client_headers,
    taste_clusters,
    wait_for_applied,
    wait_for_task,
)

USERS_PER_CLUSTER = 250
#: The keys the demo loader sends with (scripts/demo.py), given to the MovieLens system.
DEMO_API_KEYS = f"{demo.CLIENT_KEY}:client,{demo.ADMIN_KEY}:admin"


def load_synthetic(stack: Stack) -> list[str]:
    """The twenty-cluster set, trained; returns its users."""
    items, events = taste_clusters(
        clusters=20, users_per_cluster=USERS_PER_CLUSTER, items_per_cluster=150, events_per_user=20
    )
    with httpx.Client(base_url=stack.gateway, timeout=60, headers=client_headers()) as http:
        http.put("/v1/items", json={"items": items[:1000]}).raise_for_status()
        http.put("/v1/items", json={"items": items[1000:2000]}).raise_for_status()
        http.put("/v1/items", json={"items": items[2000:]}).raise_for_status()
        for start in range(0, len(events), 1000):
            http.post(
                "/v1/events", json={"events": events[start : start + 1000]}
            ).raise_for_status()
    wait_for_applied(stack.gateway, timeout=120)
    # A factor model (ALS, its default parameters), not a search's winner: the scoring figure
    # compares it with a bare numpy product over the same factors, and the synthetic serving
    # figures stay comparable from run to run (a search may pick an item-item recipe).
    task = httpx.post(
        f"{stack.gateway}/v1/models/retrain",
        json={"algorithm": "als", "search": False},
        headers=admin_headers(),
    )
    outcome = wait_for_task(stack.gateway, task.json()["task_id"], timeout=300)
    say(f"  trained: {outcome.get('result', {}).get('status')}")
    users = sorted({str(event["user_id"]) for event in events})

    def served() -> bool:
        body = httpx.get(
            f"{stack.gateway}/v1/users/{users[0]}/recommendations", headers=client_headers()
        ).json()
        return bool(body["strategy"] == "personalized")

    wait_until(served, timeout=60, what="the model to be served")
    return users


def load_movielens(stack: Stack) -> list[str]:
    """The MovieLens demo as `make run` loads it; returns its (real) users."""
    demo.load_demo(
        stack.gateway, demo.DemoKeys(), say=lambda text: say(f"  {text}"), stop=threading.Event()
    )
    body = httpx.get(f"{stack.gateway}/v1/users/1/recommendations", headers=client_headers())
    if body.json().get("strategy") != "personalized":
        raise SystemExit(f"the MovieLens model is not served: {body.text[:300]}")
    return sorted({str(user) for user in demo.movielens().userId})
