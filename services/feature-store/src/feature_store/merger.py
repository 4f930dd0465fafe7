"""Popularity over every partition: the merged sets that serving reads.

The apply script adds each event's time-decayed weight to its partition's own popularity
set (one slot per script on a cluster) and marks the item dirty there. The merger, run by one
feature-store replica at a time (a lock), sums the dirty items' scores over the partitions
and writes them into the catalogue's merged sets, which also leave unavailable items out
(``lua/merge_popular.lua``). A full pass now and then repairs anything a crash between
taking the dirty items and writing their sums left stale. Popular lists therefore trail the
events by about ``POPULARITY_MERGE_SECONDS``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from recsys_shared import keys
from recsys_shared.locks import RedisLock
from recsys_shared.redis import Arg, LuaScript, RedisClient

log = logging.getLogger(__name__)

MERGE_POPULAR = LuaScript.load(__package__, "lua/merge_popular.lua")
#: Items summed per round trip.
CHUNK = 1000
_LAYOUT = json.dumps(
    {
        "unavailable": keys.UNAVAILABLE_ITEMS,
        "item_prefix": keys.ITEM_PREFIX,
        "categories_field": keys.ITEM_CATEGORIES,
        "popular_category_prefix": keys.POPULAR_CATEGORY_PREFIX,
    }
)


class PopularityMerger:
    def __init__(
        self, client: RedisClient, partitions: keys.Partitions, *, full_every_seconds: float
    ) -> None:
        self.redis = client
        self.partitions = partitions
        self.full_every_seconds = full_every_seconds
        self._next_full = 0.0
        self._lock = RedisLock(client, keys.POPULARITY_MERGE_LOCK, ttl_seconds=30.0)

    async def run_once(self) -> int:
        """Merge what changed (everything, when a full pass is due), if no other replica is
        merging; how many items were written."""
        if not await self._lock.acquire():
            return 0
        try:
            if time.monotonic() >= self._next_full:
                self._next_full = time.monotonic() + self.full_every_seconds
                return await self.merge(await self._every_item())
            return await self.merge(await self._take_dirty())
        finally:
            await self._lock.release()

    async def _take_dirty(self) -> set[str]:
        commands: list[list[Arg]] = [
            ["SPOP", partition.popular_dirty, 100_000] for partition in self.partitions.all
        ]
        commands.append(["SPOP", keys.POPULAR_DIRTY, 100_000])
        dirty: set[str] = set()
        for popped in await self.redis.execute_many(commands):
            dirty.update(popped or ())
        return dirty

    async def _every_item(self) -> set[str]:
        found: set[str] = set()
        for partition in self.partitions.all:
            found.update(await self.redis.execute("ZRANGE", partition.popular, 0, -1))
        found.update(await self.redis.execute("ZRANGE", keys.POPULAR, 0, -1))
        return found

    async def merge(self, items: Iterable[str]) -> int:
        ordered = sorted(items)
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start : start + CHUNK]
            totals = await self._sums(chunk)
            args: list[Arg] = [_LAYOUT]
            for item, total in zip(chunk, totals, strict=True):
                args += [item, total]
            await self.redis.run(MERGE_POPULAR, keys=[keys.POPULAR], args=args)
        return len(ordered)

    async def _sums(self, items: list[str]) -> list[float]:
        replies = await self.redis.execute_many(
            [["ZMSCORE", partition.popular, *items] for partition in self.partitions.all]
        )
        return [
            sum(float(scores[index] or 0.0) for scores in replies) for index in range(len(items))
        ]
