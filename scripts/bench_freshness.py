"""Freshness: from an event's 202 to the user's list reflecting it."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import httpx
from bench_wrk import say

from recsys_shared.testing import Stack, client_headers


def freshness(stack: Stack, users: list[str]) -> dict[str, Any]:
    say("freshness: event 202 → the user's list reflects it…")
    delays = []
    with httpx.Client(base_url=stack.gateway, headers=client_headers(), timeout=10) as http:
        for user in random.Random(5).sample(users, 50):
            listed = http.get(f"/v1/users/{user}/recommendations?k=10").json()["items"]
            top = listed[0]["item_id"]
            event = {"events": [{"user_id": user, "item_id": top, "type": "purchase"}]}
            assert http.post("/v1/events", json=event).status_code == 202
            accepted = time.perf_counter()
            while top in {
                item["item_id"]
                for item in http.get(f"/v1/users/{user}/recommendations?k=10").json()["items"]
            }:
                time.sleep(0.005)
            delays.append((time.perf_counter() - accepted) * 1000)
    delays.sort()
    return {
        "events": len(delays),
        "p50_ms": round(statistics.median(delays), 1),
        "p95_ms": round(delays[int(len(delays) * 0.95) - 1], 1),
        "max_ms": round(delays[-1], 1),
        "target_p95_ms": 1000,
    }
