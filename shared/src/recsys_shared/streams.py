"""Where the consumers are in a partition's events stream: what is applied, what is waiting.

Used by the feature-store to trim a stream only behind what every consumer group has applied
and to name snapshots by the positions they cover; by the gateway to report lag, summed over
the partitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recsys_shared import keys
from recsys_shared.redis import RedisClient

#: Beyond this many waiting entries, lag is reported as "at least" this (counting is O(n)).
LAG_COUNT_LIMIT = 100_000


def parse_stream_id(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def format_stream_id(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


def next_stream_id(stream_id: str) -> str:
    """The smallest id strictly above ``stream_id``."""
    milliseconds, sequence = parse_stream_id(stream_id)
    return format_stream_id((milliseconds, sequence + 1))


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """``first_unapplied``: every entry with a smaller id has been applied by every group."""

    first_unapplied: str
    lag: int
    pending: int
    length: int
    groups: int


EMPTY = StreamPosition(first_unapplied="0-1", lag=0, pending=0, length=0, groups=0)


async def stream_position(client: RedisClient, stream: str) -> StreamPosition:
    """Where the consumer groups of one stream are."""
    exists, length = await client.execute_many([("EXISTS", stream), ("XLEN", stream)])
    if not exists:
        return EMPTY
    groups: list[dict[str, Any]] = await client.execute("XINFO", "GROUPS", stream)
    if not groups:
        return StreamPosition(first_unapplied="0-1", lag=length, pending=0, length=length, groups=0)
    newest = await _newest_id(client, stream)
    boundaries: list[tuple[int, int]] = []
    total_lag = total_pending = 0
    for group in groups:
        last_delivered = str(group["last-delivered-id"])
        pending = int(group["pending"])
        total_pending += pending
        boundary = parse_stream_id(next_stream_id(last_delivered))
        if pending:
            summary = await client.execute("XPENDING", stream, group["name"])
            # The entries may have been acknowledged since XINFO looked: then none is pending.
            if summary[1] is not None:
                boundary = min(boundary, parse_stream_id(summary[1]))
        boundaries.append(boundary)
        if newest is not None and newest > parse_stream_id(last_delivered):
            total_lag += await _undelivered(client, stream, group, last_delivered, length)
        total_lag += pending
    return StreamPosition(
        first_unapplied=format_stream_id(min(boundaries)),
        lag=total_lag,
        pending=total_pending,
        length=int(length),
        groups=len(groups),
    )


async def _newest_id(client: RedisClient, stream: str) -> tuple[int, int] | None:
    newest = await client.execute("XREVRANGE", stream, "+", "-", "COUNT", 1)
    if not newest:
        return None
    # An XREVRANGE reply: a list of [id, fields] pairs, or a map of id to fields.
    first = next(iter(newest))
    return parse_stream_id(str(first if isinstance(newest, dict) else first[0]))


async def _undelivered(
    client: RedisClient, stream: str, group: dict[str, Any], last_delivered: str, length: int
) -> int:
    """Entries after ``last_delivered``, which the caller knows to be at least one."""
    lag = group.get("lag")
    if isinstance(lag, int):
        # Redis 7 counts it for us, from a read counter that Redis 7.0 neither replicates nor
        # writes to the AOF on XREADGROUP (redis/redis#12898): after an AOF
        # rewrite and a restart, or on a promoted replica, it also counts entries long since
        # delivered. Hence no count at all when nothing is newer than the group's position
        # (the caller's check), and never more than the stream holds.
        return max(1, min(lag, length))
    waiting = await client.execute(
        "XRANGE", stream, f"({last_delivered}", "+", "COUNT", LAG_COUNT_LIMIT
    )
    return len(waiting or [])


@dataclass(frozen=True, slots=True)
class PipelinePosition:
    """Every partition's position, and their totals."""

    partitions: tuple[StreamPosition, ...]

    @property
    def lag(self) -> int:
        return sum(position.lag for position in self.partitions)

    @property
    def pending(self) -> int:
        return sum(position.pending for position in self.partitions)

    @property
    def length(self) -> int:
        return sum(position.length for position in self.partitions)


async def pipeline_position(
    client: RedisClient, partitions: Sequence[keys.Partition]
) -> PipelinePosition:
    positions = [await stream_position(client, partition.events) for partition in partitions]
    return PipelinePosition(tuple(positions))
