"""Cache entries and list records on a Redis of their own, as `make run` has them, on real
processes: the recommender records what it served there, and the feature-store reads it there
to attribute the events that come back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.testing import Stack, client_headers, own_stack, wait_for_applied

pytestmark = pytest.mark.integration


@pytest.fixture
def split(ephemeral_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Stack, RedisServer]]:
    with own_stack(
        tmp_path,
        ("feature-store", "recommender1", "recommender2", "gateway"),
        EPHEMERAL_REDIS_URL=ephemeral_server.url,
    ) as stack:
        yield stack, ephemeral_server


def test_a_served_list_is_recorded_apart_and_its_click_attributed(
    split: tuple[Stack, RedisServer],
) -> None:
    stack, ephemeral = split
    with httpx.Client(base_url=stack.gateway, headers=client_headers(), timeout=10) as http:
        http.put(
            "/v1/items", json={"items": [{"item_id": "m1", "title": "One", "categories": []}]}
        ).raise_for_status()
        http.post(
            "/v1/events", json={"events": [{"user_id": "u0", "item_id": "m1", "type": "like"}]}
        ).raise_for_status()
        wait_for_applied(stack.gateway)
        served: dict[str, Any] = {}

        def listed() -> bool:  # popularity is merged over the partitions a moment later
            nonlocal served
            served = http.get("/v1/users/stranger/recommendations").json()
            return bool(served["items"])

        wait_until(listed, timeout=10, what="the liked item in the popular list")
        assert served["strategy"] == "popular"
        click = {
            "user_id": "stranger",
            "item_id": served["items"][0]["item_id"],
            "type": "click",
            "recommendation_id": served["recommendation_id"],
        }
        http.post("/v1/events", json={"events": [click]}).raise_for_status()
        wait_for_applied(stack.gateway)

    record = keys.recommendation("stranger", served["recommendation_id"])
    main = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    apart = redis.Redis.from_url(ephemeral.url, decode_responses=True)
    try:
        assert apart.exists(record)
        assert not main.exists(record)

        def attributed() -> bool:
            hits = {}
            for key in main.scan_iter("rs:{p0}:drift:*:hits"):
                hits.update(main.hgetall(key))
            return hits.get("popular:events") == "1" and hits.get("popular:hits") == "1"

        wait_until(attributed, timeout=10, what="the click attributed to the served list")
    finally:
        main.close()
        apart.close()
