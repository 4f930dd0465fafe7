"""Making users' cached lists stale when their events are applied (see ``gateway.cache``).

Every user's cached lists share a hash with the user's *nonce*; a gateway serves an entry only
while the nonce it was stamped with is still there. The applier renews the nonces of a batch's
users twice (``lua/renew_nonces.lua``, one script per batch on the partition's slot): before
the apply script, so the lists cached before the batch are stale before its events count, and
after it, so a list computed while the batch was being applied (stamped with the first new
nonce) is not served either. A renewal that fails is logged and counted, and the batch is
applied anyway: the cache must not hold events back, and the lists it leaves valid expire with
the cache's TTL.

Neither renewal holds up the events: the consumer renews before a batch while Redis still
applies the one ahead of it, and the renewal after a batch runs in the background while the
next batch is read (at most one per partition in flight: the next waits for it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Collection

from feature_store import metrics
from recsys_shared import keys
from recsys_shared.errors import StoreError, StoreUnavailable
from recsys_shared.redis import LuaScript, RedisClient

log = logging.getLogger(__name__)

RENEW = LuaScript.load(__package__, "lua/renew_nonces.lua")


class CacheNonces:
    def __init__(self, client: RedisClient) -> None:
        """``client``: where the cached lists live (the ephemeral Redis, when there is one)."""
        self.redis = client
        self._after: dict[int, asyncio.Task[None]] = {}

    async def before(self, partition: keys.Partition, users: Collection[str]) -> None:
        """Renew now: the lists cached for ``users`` are stale when this returns."""
        await self._renew(partition, users, "before")

    async def after(self, partition: keys.Partition, users: Collection[str]) -> None:
        """Start renewing in the background, once the partition's previous renewal is done;
        :meth:`settle` waits for it."""
        previous = self._after.pop(partition.number, None)
        if previous is not None:
            await previous
        if users:
            self._after[partition.number] = asyncio.create_task(
                self._renew(partition, users, "after")
            )

    async def settle(self) -> None:
        """Wait for the renewals still running (at shutdown, and for a caller that reads the
        cache right after a batch)."""
        running, self._after = list(self._after.values()), {}
        await asyncio.gather(*running)

    async def _renew(self, partition: keys.Partition, users: Collection[str], when: str) -> None:
        if not users:
            return
        # One nonce for the batch: it only has to differ from every nonce a user had before.
        nonce = secrets.token_hex(8)
        try:
            await self.redis.run(
                RENEW,
                keys=[keys.cached_lists(partition, user) for user in users],
                args=[keys.CACHE_NONCE, nonce, keys.CACHE_NONCE_TTL_SECONDS, when],
            )
        except (StoreUnavailable, StoreError) as error:
            metrics.CACHE_NONCE_FAILURES.inc()
            log.warning("cache nonces not renewed %s a batch: %s", when, error.detail)
