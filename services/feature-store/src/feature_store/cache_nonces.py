"""Making users' cached lists stale when their events are applied (see ``gateway.cache``).

Every user's cached lists share a hash with the user's *nonce*; a gateway serves an entry only
while the nonce it was stamped with is still there. Once a batch is applied, the applier
renews the nonces of its users (``lua/renew_nonces.lua``, one script per batch on the
partition's slot): each user's hash is replaced by one holding only a new nonce, so no list
stamped before the renewal is served again, whether it was cached before the batch or ranked
while it was applied and stored late.

The renewal runs in the background while the consumer reads and applies the next batch (at
most one per partition in flight: the next waits for it), so the cache costs the events no
latency; a list cached before a batch may be served for the few milliseconds between the
batch's script and its renewal, well inside the freshness target. A renewal that fails is
logged and counted, and the events stay applied: the cache must not hold events back, and the
lists it leaves valid expire with the cache's TTL.
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
        self._running: dict[int, asyncio.Task[None]] = {}

    async def renew(self, partition: keys.Partition, users: Collection[str]) -> None:
        """Start renewing the nonces of ``users`` (a batch's, applied) in the background, once
        the partition's previous renewal is done; :meth:`settle` waits for it."""
        previous = self._running.get(partition.number)
        if previous is not None:
            # Shielded: a consumer cancelled while it waits here leaves the renewal running
            # (and listed, so that settle() still waits for it).
            await asyncio.shield(previous)
        if users:
            self._running[partition.number] = asyncio.create_task(self._renew(partition, users))

    async def settle(self) -> None:
        """Wait for the renewals still running (at shutdown, and for a caller that reads the
        cache right after a batch)."""
        running, self._running = list(self._running.values()), {}
        await asyncio.gather(*running)

    async def _renew(self, partition: keys.Partition, users: Collection[str]) -> None:
        # One nonce for the batch: it only has to differ from every nonce a user had before.
        nonce = secrets.token_hex(8)
        try:
            await self.redis.run(
                RENEW,
                keys=[keys.cached_lists(partition, user) for user in users],
                args=[keys.CACHE_NONCE, nonce, keys.CACHE_NONCE_TTL_SECONDS],
            )
        except (StoreUnavailable, StoreError) as error:
            metrics.CACHE_NONCE_FAILURES.inc()
            log.warning("cache nonces not renewed after a batch: %s", error.detail)
        except Exception:
            # A background task's error would be raised again by every later wait on it, and
            # fail every batch after it: like a Redis error, it costs stale lists, not events.
            metrics.CACHE_NONCE_FAILURES.inc()
            log.exception("cache nonces not renewed after a batch")
