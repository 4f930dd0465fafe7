"""Serving under change and failure, on real processes: fresh results without a retrain, marked
fallbacks while every recommender is down, and no failed request across model swaps."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from recsys_shared import keys
from recsys_shared.processes import wait_until
from recsys_shared.testing import (
    Stack,
    admin_headers,
    client_headers,
    ok_body,
    wait_for_applied,
    wait_for_task,
)
from recsys_shared.testing.fixtures import EVERY_TIER

pytestmark = [pytest.mark.integration, EVERY_TIER]


def recommendations(stack: Stack, user: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.gateway}/v1/users/{user}/recommendations",
        params={"k": 10, **params},
        headers=client_headers(),
        timeout=10,
    )
    return ok_body(response)


def first_list(
    stack: Stack, user: str, wanted: Callable[[dict[str, Any]], bool], *, timeout: float, what: str
) -> dict[str, Any]:
    """The user's list, asked for until it is ``wanted`` (within ``timeout`` seconds)."""
    body: dict[str, Any] = {}

    def ready() -> bool:
        nonlocal body
        body = recommendations(stack, user)
        return wanted(body)

    wait_until(ready, timeout=timeout, interval=0.05, what=what)
    return body


def personalised(stack: Stack, user: str) -> dict[str, Any]:
    return first_list(
        stack,
        user,
        lambda body: body["strategy"] == "personalized",
        timeout=30,
        what=f"personalised lists for {user}",
    )


def test_an_event_changes_the_users_next_list_without_a_retrain(
    stack: Stack, trained: dict[str, object]
) -> None:
    before = personalised(stack, "a7")
    # The same question, the same version, no new event: the cached list (asked until it is
    # stored, which the answer does not wait for).
    again = first_list(
        stack, "a7", lambda body: bool(body["cached"]), timeout=5, what="the cached list"
    )
    assert again["items"] == before["items"]
    first_choice = before["items"][0]["item_id"]

    # The user turns to the other taste cluster: many likes of B items, and one of the A item
    # that was on top of their list.
    events = [
        {"user_id": "a7", "item_id": f"B{index}", "type": "like", "event_id": f"turn-{index}"}
        for index in range(12)
    ] + [{"user_id": "a7", "item_id": first_choice, "type": "purchase", "event_id": "turn-a"}]
    response = httpx.post(
        f"{stack.gateway}/v1/events", json={"events": events}, headers=client_headers(), timeout=10
    )
    assert response.status_code == 202, response.text
    wait_for_applied(stack.gateway)

    after = recommendations(stack, "a7")
    assert after["cached"] is False
    assert after["model_version"] == before["model_version"]  # no retrain happened
    listed = [item["item_id"] for item in after["items"]]
    assert first_choice not in listed  # the seen filter knows the purchase at once
    assert (
        Counter(item[0] for item in listed)["B"]
        > Counter(item["item_id"][0] for item in before["items"])["B"]
    )


def test_an_item_made_unavailable_leaves_the_cached_lists_that_held_it(
    stack: Stack, trained: dict[str, object]
) -> None:
    personalised(stack, "a5")
    cached = first_list(
        stack, "a5", lambda body: bool(body["cached"]), timeout=5, what="the cached list"
    )
    top = cached["items"][0]["item_id"]
    item = f"{stack.url('feature-store')}/items/{top}"

    # Written past this gateway, as another replica would: it hears of it on the channel.
    httpx.patch(item, json={"available": False}, timeout=10).raise_for_status()
    try:
        after = first_list(
            stack, "a5", lambda body: not body["cached"], timeout=2, what="the list recomputed"
        )
        assert top not in [listed["item_id"] for listed in after["items"]]
        assert after["model_version"] == cached["model_version"]
    finally:
        httpx.patch(item, json={"available": True}, timeout=10).raise_for_status()


def test_a_brand_new_user_is_personalised_after_a_few_events(
    stack: Stack, trained: dict[str, object]
) -> None:
    assert recommendations(stack, "newcomer")["strategy"] == "popular"
    events = [
        {"user_id": "newcomer", "item_id": f"A{index}", "type": "like"} for index in (1, 2, 3)
    ]
    response = httpx.post(
        f"{stack.gateway}/v1/events", json={"events": events}, headers=client_headers(), timeout=10
    )
    assert response.status_code == 202
    wait_for_applied(stack.gateway)
    body = recommendations(stack, "newcomer")
    assert body["strategy"] == "personalized"
    assert Counter(item["item_id"][0] for item in body["items"])["A"] >= 8


def _batch_counts(stack: Stack) -> tuple[float, float]:
    """(lists sent, calls made) by the gateway to the recommenders so far."""
    text = httpx.get(f"{stack.gateway}/metrics", timeout=5).text
    found = dict(re.findall(r"^recsys_recommender_batch_lists_(sum|count) ([\d.e+]+)$", text, re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


async def _concurrent_misses(stack: Stack, users: list[str], offset: int) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=len(users))
    async with httpx.AsyncClient(
        base_url=stack.gateway, headers=client_headers(), timeout=10, limits=limits
    ) as http:
        responses = await asyncio.gather(
            *(
                http.get(f"/v1/users/{user}/recommendations", params={"k": 4, "offset": offset})
                for user in users
            )
        )
    assert [response.status_code for response in responses] == [200] * len(users)
    return [response.json() for response in responses]


def test_concurrent_misses_share_calls_and_each_gets_its_own_list(
    stack: Stack, trained: dict[str, object]
) -> None:
    personalised(stack, "a0")
    users = [f"{cluster}{index}" for cluster in "ab" for index in range(30)]
    sent_before, calls_before = _batch_counts(stack)
    # Pages no other test asks for (k=4): every request is a cache miss.
    for offset in range(1, 4):
        lists = asyncio.run(_concurrent_misses(stack, users, offset))
        for user, body in zip(users, lists, strict=True):
            assert body["user_id"] == user
            assert body["strategy"] == "personalized"
            assert body["cached"] is False
            # Each list is its own user's: the one a recommender gives for that user alone.
            alone = httpx.get(
                f"{stack.url('recommender1')}/users/{user}/recommendations",
                params={"k": 4, "offset": offset},
                timeout=10,
            ).json()
            assert body["items"] == alone["items"]
        assert len({body["recommendation_id"] for body in lists}) == len(users)
    sent, calls = _batch_counts(stack)
    assert sent - sent_before == 3 * len(users)
    # Misses that arrive together travel together: fewer calls than lists.
    assert calls - calls_before < sent - sent_before


def test_killed_recommenders_give_marked_fallbacks_and_service_resumes(
    stack: Stack, trained: dict[str, object]
) -> None:
    personalised(stack, "b3")
    for replica in ("recommender1", "recommender2"):
        stack.kill(replica)
    try:
        for user in ("b3", "b4", "nobody"):
            body = recommendations(stack, user, exclude_seen="true", k=5)
            if body["cached"]:
                continue  # a list cached before the crash is still right: same version, epoch
            assert body["strategy"] == "popular"
            assert body["fallback_reason"] == "recommender_unavailable"
            assert len(body["items"]) == 5
        similar = httpx.get(
            f"{stack.gateway}/v1/items/A1/similar", headers=client_headers(), timeout=10
        )
        assert similar.status_code == 200
        assert similar.json()["fallback_reason"] == "recommender_unavailable"
    finally:
        for replica in ("recommender1", "recommender2"):
            stack.start(replica)
    # The breakers let a trial request through after their reset time: service resumes.
    personalised(stack, "b9")


def test_model_swaps_under_concurrent_requests_fail_no_request(
    stack: Stack, trained: dict[str, object]
) -> None:
    statuses: Counter[int] = Counter()
    versions: Counter[object] = Counter()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=stack.gateway, headers=client_headers(), timeout=10) as http:
            index = 0
            while not stop.is_set():
                user = f"{'ab'[index % 2]}{(worker * 7 + index) % 40}"
                response = http.get(f"/v1/users/{user}/recommendations", params={"k": 5})
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()["model_version"]] += 1
                index += 1
                # Paced: four unpaced clients on cached lists pass the key's limit of 1,000
                # requests a second on a fast machine, and a 429 is not what this measures.
                stop.wait(0.01)

    threads = [threading.Thread(target=load, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        with httpx.Client(base_url=stack.gateway, headers=admin_headers(), timeout=30) as admin:
            task = admin.post("/v1/models/retrain", json={"force": True}).json()["task_id"]
            result = wait_for_task(stack.gateway, task)
            new_version = result["result"]["version"]  # type: ignore[index]
            wait_until(
                lambda: versions[new_version] > 20, timeout=30, what="the new version served"
            )
            rollback = admin.post(f"/v1/models/{trained['version']}/activate")
            assert rollback.status_code == 200, rollback.text
            marker = versions[trained["version"]]
            wait_until(
                lambda: versions[trained["version"]] > marker + 20,
                timeout=30,
                what="the rolled-back version served",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 100


def _shedding(url: str) -> bool:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return re.search(r"^recsys_ephemeral_writes_shedding 1.0$", text, re.MULTILINE) is not None


def test_near_redis_memory_limit_lists_go_unrecorded_and_events_still_land(
    stack: Stack, trained: dict[str, object]
) -> None:
    store = stack.tier.inspector()
    # Features enough (20 MB) that connection buffers coming and going do not move the ratio.
    padding = [f"{keys.key('test', 'padding')}:{n}" for n in range(20_000)]
    with store.pipeline(transaction=False) as pipe:
        for name in padding:
            pipe.set(name, "x" * 1000)
        pipe.execute()
    primaries = stack.tier.primaries()
    for primary in primaries:  # every primary above the guards' 90 % mark
        primary.config_set("maxmemory", int(int(primary.info("memory")["used_memory"]) / 0.94))
    try:
        serving = [stack.gateway, stack.url("recommender1"), stack.url("recommender2")]
        wait_until(
            lambda: all(_shedding(url) for url in serving),
            timeout=20,
            what="every serving process to see Redis near its memory limit",
        )
        records = _count(stack, keys.RECOMMENDATION_PREFIX)
        cached = _count(stack, keys.CACHE_PREFIX)
        for offset in range(1, 6):  # distinct queries: computed, not cached
            body = recommendations(stack, "a2", offset=offset)
            assert body["strategy"] == "personalized"
            assert not body["cached"]
        event = {"events": [{"user_id": "a2", "item_id": "A1", "type": "view"}]}
        accepted = httpx.post(
            f"{stack.gateway}/v1/events", json=event, headers=client_headers(), timeout=10
        )
        assert accepted.status_code == 202, accepted.text
        assert _count(stack, keys.RECOMMENDATION_PREFIX) == records
        assert _count(stack, keys.CACHE_PREFIX) == cached
    finally:
        for primary in primaries:
            primary.config_set("maxmemory", 0)
            primary.close()
        with store.pipeline(transaction=False) as pipe:
            for name in padding:
                pipe.delete(name)
            pipe.execute()
        store.close()


def _count(stack: Stack, prefix: str) -> int:
    return sum(key.startswith(prefix) for key in stack.tier.every_key())
