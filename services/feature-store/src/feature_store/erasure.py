"""Forgetting users: erasure on request, and users silent for ``USER_RETENTION_DAYS``.

Both go through one script per partition (``lua/forget_user.lua``) that deletes everything
the data tier holds of the user: features, idempotency markers, the lists experiments served
them, membership, drift counts and dead letters. An erasure also leaves a tombstone (a digest
of the id, never the id) that makes the applier drop events the user sent before it, so
nothing in flight brings them back; the tombstones go after ``ERASURE_TOMBSTONE_DAYS``. A
tombstone is stamped by the partition's Redis, whose clock also names the stream's entries,
so hosts' clocks that disagree cannot let an event in flight through (``lua/apply.lua``). The
ephemeral Redis's cached lists and served-list records of the user go too, and once more
``ERASURE_RESWEEP_SECONDS`` later: a list computed from features read just before the erasure
is recorded (and cached) without waiting for the answer, so its write may land after the
first sweep. Snapshots and model artifacts are rewritten by the retraining-worker
(``recsys.erase_from_artifacts``), and until then no recommender personalises a user who has
no features (``recommender.service``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from recsys_shared import keys
from recsys_shared.errors import StoreError, StoreUnavailable
from recsys_shared.redis import Arg, LuaScript, RedisClient

log = logging.getLogger(__name__)

FORGET_USERS = LuaScript.load(__package__, "lua/forget_user.lua")
#: Retention forgets at most this many users of a partition per script call.
FORGET_BATCH = 200


def _layout(partition: keys.Partition, *, now: float, cutoff: float) -> str:
    hour = keys.drift_hour(now)
    buckets = range(hour - keys.DRIFT_WINDOW_TTL_SECONDS // 3600 - 1, hour + 1)
    return json.dumps(
        {
            "user_prefix": partition.user_prefix,
            "suffixes": keys.USER_SUFFIXES,
            "erased": partition.erased,
            "dead": partition.dead_letters,
            "drift_users": [partition.drift(bucket).users for bucket in buckets],
            "entry_field": keys.DEAD_ENTRY,
            "cutoff": cutoff,
        }
    )


class Eraser:
    def __init__(
        self,
        client: RedisClient,
        partitions: keys.Partitions,
        *,
        ephemeral: RedisClient,
        resweep_seconds: float = 0.0,
    ) -> None:
        """``ephemeral``: where cached lists and served-list records live (may be ``client``);
        ``resweep_seconds``: when to sweep them once more after an erasure (0: never)."""
        self.redis = client
        self.partitions = partitions
        self.ephemeral = ephemeral
        self.resweep_seconds = resweep_seconds
        self._resweeps: set[asyncio.Task[None]] = set()

    async def erase(self, user_id: str) -> None:
        """Erase a user now; idempotent. A tombstone is left even for a user with no
        features yet: their first events may still be in flight."""
        partition = self.partitions.of(user_id)
        now = time.time()
        had_data = await self.redis.run(
            FORGET_USERS,
            keys=[partition.users],
            args=[_layout(partition, now=now, cutoff=0), user_id, keys.user_digest(user_id)],
        )
        if had_data:
            # A new data generation: the next snapshot differs even without new events (and
            # none is taken again for erasing someone it never held).
            await self.redis.execute("INCR", keys.DATA_GENERATION)
        await self._sweep(user_id)
        if self.resweep_seconds > 0:
            task = asyncio.create_task(self._sweep_later(user_id), name="erasure-resweep")
            self._resweeps.add(task)
            task.add_done_callback(self._resweeps.discard)

    async def _sweep(self, user_id: str) -> None:
        """The user's cached lists and served-list records, off the ephemeral Redis, and the
        lists experiments served them (a record ranked before the erasure may land after)."""
        partition = self.partitions.of(user_id)
        await self.ephemeral.execute("DEL", keys.cached_lists(partition, user_id))
        await self._delete_matching(keys.recommendations_of(user_id))
        await self.redis.execute("DEL", partition.user_lists(user_id))

    async def _sweep_later(self, user_id: str) -> None:
        await asyncio.sleep(self.resweep_seconds)
        try:
            await self._sweep(user_id)
        except (StoreUnavailable, StoreError) as error:
            # What is left expires with its TTL (RECOMMENDATION_TTL_SECONDS at most).
            log.warning("second sweep after an erasure failed: %s", error.detail)

    async def aclose(self) -> None:
        """Cancel the second sweeps still waiting (the process is stopping)."""
        for task in self._resweeps:
            task.cancel()
        await asyncio.gather(*self._resweeps, return_exceptions=True)

    async def _delete_matching(self, prefix: str) -> None:
        found = [name async for name in self.ephemeral.scan(_glob_escape(prefix) + "*")]
        for start in range(0, len(found), 500):
            await self.ephemeral.execute("UNLINK", *found[start : start + 500])

    async def forget_silent(self, partition: keys.Partition, *, retention_seconds: float) -> int:
        """Forget the partition's users who sent nothing for the retention period."""
        now = time.time()
        cutoff = now - retention_seconds
        forgotten = 0
        while True:
            silent: list[str] = await self.redis.execute(
                "ZRANGE", partition.users, "-inf", f"({cutoff!r}", "BYSCORE",
                "LIMIT", 0, FORGET_BATCH,
            )  # fmt: skip
            if not silent:
                break
            args: list[Arg] = [_layout(partition, now=now, cutoff=cutoff)]
            for user_id in silent:
                args += [user_id, ""]
            forgotten += int(await self.redis.run(FORGET_USERS, keys=[partition.users], args=args))
            # Their cached lists too (a user who reads lists may send no events).
            await self.ephemeral.execute(
                "DEL", *(keys.cached_lists(partition, user_id) for user_id in silent)
            )
            if len(silent) < FORGET_BATCH:
                break
        if forgotten:
            await self.redis.execute("INCR", keys.DATA_GENERATION)
        return forgotten

    async def prune_tombstones(self, partition: keys.Partition, *, keep_seconds: float) -> int:
        """Drop tombstones older than ``keep_seconds``: by then nothing the user sent before
        the erasure is still in flight, and every artifact has been rewritten."""
        cutoff = time.time() - keep_seconds
        stale = [
            digest
            async for digest, erased_at in _hash_items(self.redis, partition.erased)
            if float(erased_at) < cutoff
        ]
        if stale:
            await self.redis.execute("HDEL", partition.erased, *stale)
        return len(stale)

    async def tombstones(self) -> dict[str, float]:
        """Every erasure still remembered: user digest → when (the partition's Redis clock)."""
        found: dict[str, float] = {}
        for partition in self.partitions.all:
            async for digest, erased_at in _hash_items(self.redis, partition.erased):
                found[digest] = float(erased_at)
        return found


async def _hash_items(client: RedisClient, name: str) -> AsyncIterator[tuple[str, str]]:
    cursor = "0"
    while True:
        cursor, flat = await client.execute("HSCAN", name, cursor, "COUNT", 1000)
        fields = iter(flat)
        for field in fields:
            yield field, next(fields)
        if cursor == "0":
            return


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
