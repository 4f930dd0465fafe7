"""Growing from one Redis to a Redis Cluster with the data kept (``recsys_shared.data_move``),
on real processes: a system on a single Redis (one partition) takes a catalogue, events with
ids, an erasure and a dead letter; once stopped, its data moves into a 3-master cluster
spread over six partitions. Every user's features land whole in their new partition, the
summed counters add up, the tombstone reaches every partition; a system started on the
cluster knows the old event ids (duplicates, not new events) and erases a moved user
completely. A cluster moves back into one partition of one Redis, its per-partition
popularity summed. And the move refuses, before writing anything, a source with unapplied events,
a target that is not empty and a key it does not know; a key the scan returns twice is summed
once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from recsys_shared import data_move, keys
from recsys_shared.data_move import MoveRefused, move_data
from recsys_shared.processes import RedisServer
from recsys_shared.redis import RedisClient, connect
from recsys_shared.redis_cluster import RedisCluster
from recsys_shared.schemas import DataLayout
from recsys_shared.testing import (
    DataTier,
    admin_headers,
    build_stack,
    client_headers,
    cluster_tier,
    load,
    send_events,
    single_tier,
    start_all,
    wait_for_applied,
)
from recsys_shared.testing.inspection import occurrences_in

pytestmark = pytest.mark.integration

USERS = [f"mover:{n}" for n in range(40)]
ITEMS = [f"item-{n}" for n in range(12)]
ERASED = "gone:before-the-move"


def _events() -> list[dict[str, object]]:
    return [
        {"event_id": f"{user}-{n}", "user_id": user, "item_id": ITEMS[(u + n) % 12], "type": "view"}
        for u, user in enumerate([*USERS, ERASED])
        for n in range(4)
    ]


def _move(source: str, target: str, partitions: int) -> None:
    async def run() -> None:
        old, new = await connect(source), await connect(target)
        try:
            await move_data(old, new, keys.Partitions(partitions))
        finally:
            await old.aclose()
            await new.aclose()

    asyncio.run(run())


@pytest.fixture
def tiers(
    redis_server: RedisServer,
    redis_url: str,
    redis_cluster: RedisCluster,
    broker_server: RedisServer,
) -> Iterator[tuple[DataTier, DataTier]]:
    target = cluster_tier(redis_cluster, broker_server)
    target.flush()
    yield single_tier(redis_server), target
    target.flush()


def test_a_single_redis_moves_into_a_cluster_and_the_system_runs_on_it(
    tiers: tuple[DataTier, DataTier], tmp_path: Path
) -> None:
    source, target = tiers
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    before = build_stack(source, tmp_path / "before")
    try:
        start_all(before, ("feature-store", "gateway"))
        items = [{"item_id": item, "title": item, "categories": ["c"]} for item in ITEMS]
        load(before.gateway, items, _events())
        httpx.delete(
            f"{before.gateway}/v1/users/{ERASED}", headers=admin_headers()
        ).raise_for_status()
        wait_for_applied(before.gateway)
    finally:
        before.close()
    old = source.inspector()
    letter = {"user_id": USERS[7], "item_id": "x", "type": "view"}
    old.xadd(
        keys.Partition(0).dead_letters,
        {keys.DEAD_REASON: "invalid_event", keys.DEAD_ENTRY: json.dumps(letter)},
    )
    histories = {user: old.hgetall(keys.Partition(0).user_items(user)) for user in USERS}
    popular = old.zrange(keys.POPULAR, 0, -1, withscores=True)

    _move(source.url, target.url, target.partitions)

    new, partitions = target.inspector(), keys.Partitions(target.partitions)
    assert DataLayout.model_validate_json(new.get(keys.DATA_LAYOUT)).partitions == target.partitions
    assert {user: new.hgetall(partitions.of(user).user_items(user)) for user in USERS} == histories
    assert all(new.zscore(partitions.of(user).users, user) for user in USERS)
    assert len({partitions.of(user).number for user in USERS}) == target.partitions
    assert new.zrange(keys.POPULAR, 0, -1, withscores=True) == popular
    assert all(new.hlen(partition.erased) == 1 for partition in partitions.all)
    assert partitions.of(USERS[7]).number != 0  # not where the summed counters go
    [(_, moved_letter)] = new.xrange(partitions.of(USERS[7]).dead_letters)
    assert json.loads(moved_letter[keys.DEAD_ENTRY]) == letter

    after = build_stack(target, tmp_path / "after")
    try:
        start_all(after, ("feature-store", "gateway"))
        with httpx.Client(base_url=after.gateway, timeout=30) as http:
            again = http.post(
                "/v1/events", json={"events": _events()[:8]}, headers=client_headers()
            )
            assert again.json() == {"accepted": 0, "duplicates": 8}  # the markers moved too
            send_events(http, [{"user_id": USERS[7], "item_id": ITEMS[0], "type": "like"}])
            wait_for_applied(after.gateway)
            http.delete(f"/v1/users/{USERS[7]}", headers=admin_headers()).raise_for_status()
            wait_for_applied(after.gateway, trimmed=True)  # the applied event trimmed too
    finally:
        after.close()
    primaries = target.primaries(decode=False)
    assert occurrences_in(primaries, USERS[7]) == []  # features, drift counts, dead letter
    assert occurrences_in(primaries, USERS[8]) != []  # and only that user


def test_the_move_refuses_before_writing_anything(redis_url: str, own_redis: RedisServer) -> None:
    source, target = redis.Redis.from_url(redis_url), own_redis.inspector()
    source.set(keys.DATA_LAYOUT, DataLayout(version=1, partitions=1).model_dump_json())
    source.xadd(keys.Partition(0).events, {keys.EVENT_FIELD: "{}"})  # never applied

    with pytest.raises(MoveRefused, match="still has events to apply"):
        _move(redis_url, own_redis.url, 4)
    source.delete(keys.Partition(0).events)
    source.set(f"{keys.PREFIX}:{{p0}}:mystery", "1")
    with pytest.raises(MoveRefused, match="does not know"):
        _move(redis_url, own_redis.url, 4)
    assert target.dbsize() == 0
    source.delete(f"{keys.PREFIX}:{{p0}}:mystery")
    target.set(keys.SNAPSHOT_LATEST, "{}")
    with pytest.raises(MoveRefused, match="empty Redis"):
        _move(redis_url, own_redis.url, 4)


def test_the_command_takes_its_settings_from_the_environment(
    redis_url: str, own_redis: RedisServer
) -> None:
    source = redis.Redis.from_url(redis_url, decode_responses=True)
    source.hset(keys.Partition(0).user_items("u:1"), "item", "2")  # data from before rs:layout
    command = [sys.executable, "-m", "recsys_shared.data_move"]
    settings = {"MOVE_FROM_REDIS_URL": redis_url, "MOVE_TO_REDIS_URL": own_redis.url}

    unset = subprocess.run(command, env={**os.environ, **settings}, capture_output=True, text=True)
    old_count = {**os.environ, **settings, "EVENT_PARTITIONS": "3"}
    unknown = subprocess.run(command, env=old_count, capture_output=True, text=True)
    moved = subprocess.run(
        command, env={**old_count, "MOVE_FROM_PARTITIONS": "1"}, capture_output=True, text=True
    )

    assert (unset.returncode, unknown.returncode, moved.returncode) == (1, 1, 0)
    assert "set EVENT_PARTITIONS" in unset.stderr
    assert "MOVE_FROM_PARTITIONS" in unknown.stderr
    assert "moved into 3 partition(s)" in moved.stderr
    target = own_redis.inspector()
    user_partition = keys.Partitions(3).of("u:1")
    assert target.hgetall(user_partition.user_items("u:1")) == {"item": "2"}


def test_a_cluster_moves_back_into_one_redis_with_one_partition(
    tiers: tuple[DataTier, DataTier], own_redis: RedisServer, tmp_path: Path
) -> None:
    # The other way round: a cluster's six partitions as the source (read on each master)
    # into one partition of a single Redis.
    _, source = tiers
    stack = build_stack(source, tmp_path)
    try:
        start_all(stack, ("feature-store", "gateway"))
        items = [{"item_id": item, "title": item, "categories": ["c"]} for item in ITEMS]
        load(stack.gateway, items, _events())
    finally:
        stack.close()
    old, partitions = source.inspector(), keys.Partitions(source.partitions)
    histories = {user: old.hgetall(partitions.of(user).user_items(user)) for user in USERS}
    weights = [old.zrange(p.popular, 0, -1, withscores=True) for p in partitions.all]

    _move(source.url, own_redis.url, 1)

    new, only = own_redis.inspector(), keys.Partition(0)
    assert {user: new.hgetall(only.user_items(user)) for user in USERS} == histories
    assert new.zcard(only.users) == len(USERS) + 1
    summed: dict[str, float] = {}
    for item, weight in (pair for listed in weights for pair in listed):
        summed[item] = summed.get(item, 0.0) + weight
    moved = dict(new.zrange(only.popular, 0, -1, withscores=True))
    assert moved.keys() == summed.keys()
    assert all(abs(moved[item] - summed[item]) < 1e-9 * summed[item] for item in summed)


def test_counters_are_summed_expiries_kept_and_passing_state_left_behind(
    redis_url: str, own_redis: RedisServer
) -> None:
    source, two = redis.Redis.from_url(redis_url, decode_responses=True), keys.Partitions(2)
    source.set(keys.DATA_LAYOUT, DataLayout(version=1, partitions=2).model_dump_json())
    for partition, count in zip(two.all, (3, 4), strict=True):
        source.hset(partition.experiment("7"), "a:served", count)  # a running experiment's
        source.hset(partition.stats, keys.STAT_APPLIED, count * 10)
        source.hset(partition.drift(100).items, "i1", count)
        source.expire(partition.drift(100).items, 3600)
        source.hset(partition.heartbeats, "fs-a", 1.0)
    lists = two.of("bob").user_lists("bob")
    source.hset(lists, "rec-1", "{}")
    source.expire(lists, 600)
    source.set(keys.TRAINING_LOCK, "held")
    source.set(keys.recommendation("bob", "rec-1"), "{}")

    _move(redis_url, own_redis.url, 3)

    target, three = own_redis.inspector(), keys.Partitions(3)
    first = three.all[0]
    assert target.hgetall(first.experiment("7")) == {"a:served": "7"}
    assert target.hgetall(first.stats) == {keys.STAT_APPLIED: "70"}
    assert target.hgetall(first.drift(100).items) == {"i1": "7"}
    assert 3500 < target.ttl(first.drift(100).items) <= 3600
    assert 500 < target.ttl(three.of("bob").user_lists("bob")) <= 600
    left = [keys.TRAINING_LOCK, keys.recommendation("bob", "rec-1")]
    left += [p.heartbeats for p in three.all]
    assert [target.exists(name) for name in left] == [0] * len(left)


def test_a_key_the_scan_returns_twice_is_summed_once_and_whole_keys_go_in_batches(
    redis_url: str, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SCAN may return a key more than once (the keyspace rehashed while it ran): here it
    # returns every key twice, and whole keys are copied three per round trip.
    scan = RedisClient.scan

    async def twice(self: RedisClient, match: str, *, count: int = 1000) -> AsyncIterator[str]:
        async for name in scan(self, match, count=count):
            yield name
            yield name

    monkeypatch.setattr(RedisClient, "scan", twice)
    monkeypatch.setattr(data_move, "COPY_BATCH", 3)
    source, two = redis.Redis.from_url(redis_url, decode_responses=True), keys.Partitions(2)
    source.set(keys.DATA_LAYOUT, DataLayout(version=1, partitions=2).model_dump_json())
    for user in USERS[:10]:
        source.hset(two.of(user).user_items(user), "i1", 2)
        source.zadd(two.of(user).users, {user: 5})
    for partition in two.all:
        source.hset(partition.stats, keys.STAT_APPLIED, 10)
        source.zadd(partition.popular, {"i1": 2.5})
    source.xadd(two.of(USERS[0]).dead_letters, {keys.DEAD_ENTRY: json.dumps({"user_id": USERS[0]})})
    source.hset(keys.item("i1"), "title", "One")

    _move(redis_url, own_redis.url, 3)

    target, three = own_redis.inspector(), keys.Partitions(3)
    assert all(
        target.hgetall(three.of(user).user_items(user)) == {"i1": "2"} for user in USERS[:10]
    )
    assert sum(target.zcard(p.users) for p in three.all) == 10
    assert target.hgetall(three.all[0].stats) == {keys.STAT_APPLIED: "20"}
    assert target.zrange(three.all[0].popular, 0, -1, withscores=True) == [("i1", 5.0)]
    assert [target.xlen(p.dead_letters) for p in three.all] == [
        int(p == three.of(USERS[0])) for p in three.all
    ]
    assert target.hgetall(keys.item("i1")) == {"title": "One"}
