"""What keeps the data tier bounded and moving, beside the readers: periodic jobs.

Every replica claims entries a dead consumer left pending and trims what every group applied
(cheap, per partition). One replica at a time (a lock) merges popularity and does the slow
pass: users silent for ``USER_RETENTION_DAYS``, tombstones past ``ERASURE_TOMBSTONE_DAYS``,
consumers gone for ``CONSUMER_FORGET_SECONDS`` and deleted items past
``DELETED_ITEM_RETENTION_DAYS`` that no activatable model knows. A failed job is logged and
tried again at its next tick; no failure stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from feature_store import metrics
from feature_store.config import Settings
from feature_store.consumer import StreamConsumer
from feature_store.erasure import Eraser
from feature_store.merger import PopularityMerger
from feature_store.snapshots import user_pages
from recsys_shared import keys
from recsys_shared.locks import RedisLock
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.streams import stream_position

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
#: Deleted items forgotten per slow pass: each pass reads every user once to purge them.
PER_PASS = 100


@dataclass
class Job:
    name: str
    every_seconds: float
    run: Callable[[], Awaitable[Any]]
    next_at: float = field(default=0.0)


# eq=False: one live loop per replica (its jobs, a lock), compared by identity.
@dataclass(eq=False)
class Housekeeping:
    redis: RedisClient
    settings: Settings
    consumer: StreamConsumer
    eraser: Eraser
    partitions: tuple[keys.Partition, ...] = field(init=False)
    merger: PopularityMerger = field(init=False)
    _slow_lock: RedisLock = field(init=False)
    jobs: list[Job] = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.partitions = settings.partitions.all
        self.merger = PopularityMerger(
            self.redis,
            settings.partitions,
            full_every_seconds=settings.popularity_full_merge_seconds,
        )
        self._slow_lock = RedisLock(self.redis, keys.HOUSEKEEPING_LOCK, ttl_seconds=600)
        self.jobs = [
            Job("claim", settings.claim_interval_seconds, self.claim_stalled),
            Job("trim", settings.trim_interval_seconds, self.trim),
            Job("merge", settings.popularity_merge_seconds, self.merger.run_once),
            Job("slow", settings.housekeeping_interval_seconds, self.slow_pass),
        ]

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for job in self.jobs:
                if now >= job.next_at:
                    job.next_at = now + job.every_seconds
                    await self._run(job)
            await asyncio.sleep(TICK_SECONDS)

    async def _run(self, job: Job) -> None:
        try:
            await job.run()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            metrics.HOUSEKEEPING_FAILURES.labels(job.name).inc()
            log.warning("housekeeping %s failed (%s): %s", job.name, type(error).__name__, error)

    async def claim_stalled(self) -> int:
        """Take over entries another consumer has left pending for too long."""
        claimed_total = 0
        for partition in self.partitions:
            await self.consumer.ensure_group(partition)
            cursor = "0-0"
            while True:
                cursor, claimed, *_ = await self.redis.execute(
                    "XAUTOCLAIM", partition.events, keys.EVENTS_GROUP, self.consumer.name,
                    self.settings.claim_idle_ms, cursor,
                    "COUNT", self.settings.consumer_batch_size,
                )  # fmt: skip
                entries = [
                    (entry_id, dict(fields) if fields is not None else None)
                    for entry_id, fields in (claimed or {}).items()
                ]
                await self.consumer.process(partition, entries)
                claimed_total += len(entries)
                if cursor == "0-0" or not entries:
                    break
        if claimed_total:
            metrics.EVENTS_CLAIMED.inc(claimed_total)
            log.info("claimed %d stalled event(s)", claimed_total)
        return claimed_total

    async def trim(self) -> None:
        """Drop entries every group has applied; nothing unapplied is ever trimmed."""
        lag = length = 0
        for partition in self.partitions:
            position = await stream_position(self.redis, partition.events)
            lag += position.lag
            length += position.length
            if position.groups and position.length:
                await self.redis.execute(
                    "XTRIM", partition.events, "MINID", position.first_unapplied
                )
        metrics.STREAM_LAG.set(lag)
        metrics.STREAM_LENGTH.set(length)

    async def slow_pass(self) -> None:
        """The bounded-state jobs, by one replica at a time."""
        if not await self._slow_lock.acquire():
            return
        try:
            settings = self.settings
            for partition in self.partitions:
                forgotten = await self.eraser.forget_silent(
                    partition, retention_seconds=settings.user_retention_days * 86_400
                )
                metrics.USERS_FORGOTTEN.inc(forgotten)
                await self.eraser.prune_tombstones(
                    partition, keep_seconds=settings.erasure_tombstone_days * 86_400
                )
                await self.forget_gone_consumers(partition)
            await self.forget_deleted_items()
        finally:
            await self._slow_lock.release()

    async def forget_gone_consumers(self, partition: keys.Partition) -> None:
        """Consumers (replicas) silent for ``consumer_forget_seconds`` with nothing pending:
        out of the group and the heartbeats, so neither grows with every replica ever run."""
        await self.consumer.ensure_group(partition)
        listed: list[dict[str, Any]] = await self.redis.execute(
            "XINFO", "CONSUMERS", partition.events, keys.EVENTS_GROUP
        )
        limit_ms = self.settings.consumer_forget_seconds * 1000
        for consumer in listed:
            name = str(consumer["name"])
            if name == self.consumer.name or consumer["pending"] or consumer["idle"] < limit_ms:
                continue
            await self.redis.execute(
                "XGROUP", "DELCONSUMER", partition.events, keys.EVENTS_GROUP, name
            )
            await self.redis.execute("HDEL", partition.heartbeats, name)
            log.info("forgot consumer %s of partition %d", name, partition.number)

    async def forget_deleted_items(self) -> None:
        """Items deleted longer ago than the retention, and before the snapshot of every model
        version that can still be activated (snapshots leave deleted items out, so no such
        version knows them): out of every user's history first, then out of the unavailable
        set and every partition's popularity. A snapshot taken meanwhile still leaves them
        out; once forgotten, nothing can bring them back into a list but new events."""
        cutoff = min(
            time.time() - self.settings.deleted_item_retention_days * 86_400,
            await self._oldest_activatable_snapshot(),
        )
        old: list[str] = await self.redis.execute(
            "ZRANGE", keys.DELETED_ITEMS, "-inf", f"({cutoff!r}", "BYSCORE", "LIMIT", 0, PER_PASS
        )
        if not old:
            return
        for partition in self.partitions:
            await self._purge_histories(partition, old)
        await self.redis.execute_many(
            [
                ["SREM", keys.UNAVAILABLE_ITEMS, *old],
                ["ZREM", keys.DELETED_ITEMS, *old],
                ["ZREM", keys.POPULAR, *old],
            ],
            atomic=True,
        )
        await self.redis.execute_many(
            [["ZREM", partition.popular, *old] for partition in self.partitions]
        )

    async def _oldest_activatable_snapshot(self) -> float:
        """When the oldest snapshot a version with an artifact was trained on was taken."""
        versions = await ModelRegistry(self.redis).list()
        taken = [info.data.snapshot_created_at for info in versions if info.artifact_url]
        return min(taken, default=math.inf)

    async def _purge_histories(self, partition: keys.Partition, items: list[str]) -> None:
        """The items out of every history of the partition: one pass over its users."""
        async for users in user_pages(self.redis, partition):
            await self.redis.execute_many(
                [
                    command
                    for user in users
                    for command in (
                        ["HDEL", partition.user_items(user), *items],
                        ["ZREM", partition.user_times(user), *items],
                    )
                ]
            )
