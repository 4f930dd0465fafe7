"""Stream ids and where the consumer groups are in the events stream (real Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from recsys_shared import keys
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.redis import RedisClient, connect
from recsys_shared.streams import (
    StreamPosition,
    format_stream_id,
    next_stream_id,
    parse_stream_id,
    stream_position,
)

STREAM = keys.Partition(0).events
GROUP = keys.EVENTS_GROUP

_POSITIONS = st.tuples(st.integers(0, 2**48), st.integers(0, 2**32))


def test_parse_and_format() -> None:
    assert parse_stream_id("1714564800000-3") == (1714564800000, 3)
    assert parse_stream_id("1714564800000") == (1714564800000, 0)
    assert format_stream_id((5, 0)) == "5-0"
    assert next_stream_id("5-0") == "5-1"
    assert next_stream_id("0-0") == "0-1"
    assert next_stream_id("7") == "7-1"


@given(_POSITIONS)
def test_format_and_parse_are_inverse(position: tuple[int, int]) -> None:
    assert parse_stream_id(format_stream_id(position)) == position


@given(_POSITIONS, _POSITIONS)
def test_next_stream_id_is_the_smallest_id_above(
    position: tuple[int, int], other: tuple[int, int]
) -> None:
    following = parse_stream_id(next_stream_id(format_stream_id(position)))

    assert following > position
    # Nothing lies strictly between an id and the next one.
    assert not position < other < following


def _add(client: redis.Redis, count: int) -> list[str]:
    return [str(client.xadd(STREAM, {"n": str(n)})) for n in range(count)]


def _add_with_group(client: redis.Redis, count: int, group_at: str = "0") -> list[str]:
    """``count`` entries, then the events group, created at ``group_at`` ("0": before them all;
    "$": after them)."""
    ids = _add(client, count)
    client.xgroup_create(STREAM, GROUP, id=group_at)
    return ids


def _deliver(client: redis.Redis, count: int, group: str = GROUP) -> list[str]:
    reply: Any = client.xreadgroup(group, "consumer-1", {STREAM: ">"}, count=count)
    return [entry_id for _, entries in reply for entry_id, _ in entries]


def _deliver_and_ack(client: redis.Redis, count: int, group: str = GROUP) -> None:
    """The group's next ``count`` entries delivered and acknowledged: applied."""
    client.xack(STREAM, group, *_deliver(client, count, group))


async def test_no_stream_means_nothing_to_apply(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    assert await stream_position(redis_client, STREAM) == StreamPosition(
        first_unapplied="0-1", lag=0, pending=0, length=0, groups=0
    )


async def test_without_groups_every_entry_is_lag(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    _add(inspector, 3)

    position = await stream_position(redis_client, STREAM)

    assert position == StreamPosition(first_unapplied="0-1", lag=3, pending=0, length=3, groups=0)


async def test_delivered_but_unacked_entries_are_pending(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    ids = _add_with_group(inspector, 5)
    delivered = _deliver(inspector, 3)

    position = await stream_position(redis_client, STREAM)

    assert delivered == ids[:3]
    assert position.pending == 3
    assert position.lag == 5  # three pending plus two never delivered
    assert position.first_unapplied == ids[0]
    assert (position.length, position.groups) == (5, 1)


async def test_first_unapplied_is_the_smallest_pending_id(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    ids = _add_with_group(inspector, 5)
    _deliver(inspector, 4)
    # Acked out of order: the oldest unacked entry bounds what is applied.
    inspector.xack(STREAM, GROUP, ids[0], ids[2])

    position = await stream_position(redis_client, STREAM)

    assert position.first_unapplied == ids[1]
    assert position.pending == 2
    assert position.lag == 3


async def test_after_acking_all_delivered_entries_only_undelivered_ones_lag(
    redis_client: RedisClient,
    inspector: redis.Redis,
) -> None:
    ids = _add_with_group(inspector, 5)
    _deliver_and_ack(inspector, 3)

    position = await stream_position(redis_client, STREAM)

    assert position.pending == 0
    assert position.lag == 2
    assert position.first_unapplied == next_stream_id(ids[2])
    assert parse_stream_id(ids[2]) < parse_stream_id(position.first_unapplied)
    assert parse_stream_id(position.first_unapplied) <= parse_stream_id(ids[3])


async def test_all_acked_means_no_lag(redis_client: RedisClient, inspector: redis.Redis) -> None:
    ids = _add_with_group(inspector, 5)
    _deliver_and_ack(inspector, 10)

    position = await stream_position(redis_client, STREAM)

    assert position == StreamPosition(
        first_unapplied=next_stream_id(ids[-1]), lag=0, pending=0, length=5, groups=1
    )


async def test_the_slowest_group_bounds_what_is_applied(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    ids = _add_with_group(inspector, 4)
    inspector.xgroup_create(STREAM, "auditor", id="0")
    _deliver_and_ack(inspector, 10)
    _deliver_and_ack(inspector, 1, group="auditor")

    position = await stream_position(redis_client, STREAM)

    assert position.groups == 2
    assert position.first_unapplied == next_stream_id(ids[0])
    assert position.lag == 3
    assert position.pending == 0


async def test_a_group_created_at_the_end_counts_only_new_entries(
    redis_client: RedisClient,
    inspector: redis.Redis,
) -> None:
    ids = _add_with_group(inspector, 3, group_at="$")
    newer = _add(inspector, 2)

    position = await stream_position(redis_client, STREAM)

    assert position.lag == 2
    assert position.first_unapplied == next_stream_id(ids[-1])
    assert parse_stream_id(position.first_unapplied) <= parse_stream_id(newer[0])


@pytest.mark.parametrize("deleted", [1, 3])
async def test_undelivered_entries_are_counted_after_deletions(
    redis_client: RedisClient, inspector: redis.Redis, deleted: int
) -> None:
    # Deleting entries makes Redis stop counting a group's lag itself (it reports none).
    ids = _add_with_group(inspector, 6)
    _deliver_and_ack(inspector, 2)
    inspector.xdel(STREAM, ids[deleted + 1])

    position = await stream_position(redis_client, STREAM)

    assert position.lag == 3
    assert position.length == 5
    assert position.first_unapplied == next_stream_id(ids[1])


def _forget_reads(client: redis.Redis, entries_read: int) -> None:
    """The group's read counter set back, as Redis 7.0 leaves it after an AOF rewrite and a
    restart, or on a promoted replica (redis/redis#12898): its position stays where it is."""
    (group,) = client.xinfo_groups(STREAM)
    client.xgroup_setid(STREAM, GROUP, group["last-delivered-id"], entries_read=entries_read)


async def test_a_stale_read_counter_is_no_lag_once_every_entry_is_delivered(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    ids = _add_with_group(inspector, 5)
    _deliver_and_ack(inspector, 5)
    _forget_reads(inspector, 1)
    assert inspector.xinfo_groups(STREAM)[0]["lag"] == 4  # Redis's own count is now wrong

    position = await stream_position(redis_client, STREAM)

    assert position == StreamPosition(
        first_unapplied=next_stream_id(ids[-1]), lag=0, pending=0, length=5, groups=1
    )


async def test_a_stale_read_counter_never_counts_more_than_the_stream_holds(
    redis_client: RedisClient, inspector: redis.Redis
) -> None:
    ids = _add_with_group(inspector, 5)
    _deliver_and_ack(inspector, 5)
    inspector.xtrim(STREAM, minid=next_stream_id(ids[-1]))  # applied entries trimmed
    _forget_reads(inspector, 0)
    _add(inspector, 2)

    position = await stream_position(redis_client, STREAM)

    assert inspector.xinfo_groups(STREAM)[0]["lag"] == 7
    assert (position.lag, position.length) == (2, 2)


async def test_lag_is_true_after_an_aof_rewrite_and_a_restart(tmp_path: Path) -> None:
    """The real sequence behind the stale counter: what the group read after the last AOF
    rewrite is replayed without its count. On Redis 7.0 its own lag then stays above zero
    with nothing left to deliver."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        inspector = redis.Redis.from_url(server.url, decode_responses=True)
        _add_with_group(inspector, 5)
        _deliver_and_ack(inspector, 5)
        inspector.bgrewriteaof()

        def rewritten() -> bool:
            persistence = inspector.info("persistence")
            return not (
                persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"]
            )

        wait_until(rewritten, timeout=10, what="the AOF rewrite")
        ids = _add(inspector, 4)
        _deliver_and_ack(inspector, 4)
        inspector.close()
        server.restart()

        client = await connect(server.url)
        try:
            position = await stream_position(client, STREAM)
        finally:
            await client.aclose()
    finally:
        server.stop()

    assert position == StreamPosition(
        first_unapplied=next_stream_id(ids[-1]), lag=0, pending=0, length=9, groups=1
    )
