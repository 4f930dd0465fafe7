"""Requests per second per API key, counted in Redis so every gateway replica shares the limit."""

from __future__ import annotations

import time

from gateway import metrics
from recsys_shared import keys
from recsys_shared.errors import RateLimited
from recsys_shared.multiplexed import MultiplexedRedis

# KEYS: this second's counter for the key. ARGV: limit. Returns the count, or -1 when over.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], 2) end
if count > tonumber(ARGV[1]) then return -1 end
return count
"""


class RateLimiter:
    """A fixed one-second window per key: simple, shared by every replica, one round trip."""

    def __init__(self, client: MultiplexedRedis, *, per_second: int) -> None:
        self.per_second = per_second
        self._count = client.script(_COUNT)

    async def check(self, key_id: str) -> None:
        if self.per_second <= 0:
            return
        second = int(time.time())
        count = await self._count(keys=[keys.rate_limit(key_id, second)], args=[self.per_second])
        if int(count) < 0:
            metrics.RATE_LIMITED.inc()
            raise RateLimited(
                f"More than {self.per_second} requests in one second with this API key.",
                retry_after=1,
            )
