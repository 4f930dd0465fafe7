"""Where the consumers are in the events stream: what is applied, what is still waiting.

Used by the feature-store to trim the stream only behind what every consumer group has applied,
and to name snapshots by the stream position they cover; by the gateway to report lag.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from recsys_shared import keys

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


async def stream_position(client: aioredis.Redis) -> StreamPosition:
    if not await client.exists(keys.EVENTS_STREAM):
        return StreamPosition(first_unapplied="0-1", lag=0, pending=0, length=0, groups=0)
    async with client.pipeline(transaction=False) as pipe:
        pipe.xinfo_groups(keys.EVENTS_STREAM)
        pipe.xlen(keys.EVENTS_STREAM)
        groups, length = await pipe.execute()
    if not groups:
        return StreamPosition(first_unapplied="0-1", lag=length, pending=0, length=length, groups=0)
    boundaries: list[tuple[int, int]] = []
    total_lag = 0
    total_pending = 0
    for group in groups:
        last_delivered = group["last-delivered-id"]
        pending = int(group["pending"])
        total_pending += pending
        boundary = parse_stream_id(next_stream_id(last_delivered))
        if pending:
            summary = await client.xpending(keys.EVENTS_STREAM, group["name"])
            # The entries may have been acknowledged since XINFO looked: then none is pending.
            if summary["min"] is not None:
                boundary = min(boundary, parse_stream_id(summary["min"]))
        boundaries.append(boundary)
        total_lag += pending + await _undelivered(client, group, last_delivered)
    return StreamPosition(
        first_unapplied=format_stream_id(min(boundaries)),
        lag=total_lag,
        pending=total_pending,
        length=int(length),
        groups=len(groups),
    )


async def _undelivered(
    client: aioredis.Redis, group: dict[str, object], last_delivered: str
) -> int:
    lag = group.get("lag")
    if isinstance(lag, int):  # Redis 7 counts it for us
        return lag
    waiting = await client.xrange(
        keys.EVENTS_STREAM, min=f"({last_delivered}", max="+", count=LAG_COUNT_LIMIT
    )
    return len(waiting or [])
