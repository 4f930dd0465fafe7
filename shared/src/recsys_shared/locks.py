"""A lock in Redis held for a while by one process: ``SET NX PX`` with a token, renewed and
released only by its holder (``lua/lock_renew.lua``, ``lua/lock_release.lua``).

Used where one holder at a time must do something across every replica: one training, one
popularity merge, one housekeeping pass. A lock whose holder dies expires by itself.
"""

from __future__ import annotations

import uuid

from recsys_shared.errors import RecsysError
from recsys_shared.redis import LuaScript, RedisClient

RENEW = LuaScript.load(__package__, "lua/lock_renew.lua")
RELEASE = LuaScript.load(__package__, "lua/lock_release.lua")


class LockLost(RecsysError):
    """A write checked against a lock (a fencing check) found it no longer the writer's: it
    expired, or another holder took it since; nothing was written."""


class RedisLock:
    def __init__(self, client: RedisClient, key: str, *, ttl_seconds: float) -> None:
        self.redis = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = uuid.uuid4().hex

    async def acquire(self) -> bool:
        """Take the lock if nobody holds it."""
        taken = await self.redis.execute("SET", self.key, self.token, "NX", "PX", self.ttl_ms)
        return taken is not None

    async def renew(self) -> bool:
        """Extend our hold; False when the lock is no longer ours (it expired, or another
        holder took it since)."""
        return bool(await self.redis.run(RENEW, keys=[self.key], args=[self.token, self.ttl_ms]))

    async def release(self) -> None:
        await self.redis.run(RELEASE, keys=[self.key], args=[self.token])

    async def holder(self) -> str | None:
        held: str | None = await self.redis.execute("GET", self.key)
        return held
