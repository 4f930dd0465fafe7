"""The versioned response cache for user recommendations.

A key names the model version that ranked the list and the user's epoch (bumped by the
feature-store with every applied event of the user), so a new version or a new event makes the
old entries unreachable at once; nothing is invalidated by hand, and entries expire with a TTL.
The lookup reads the active version, the user's epoch and the entry in one Lua call; when the
entries live on the ephemeral Redis (EPHEMERAL_REDIS_URL), the first two come from the main
Redis and the entry from the other, in two commands.

Only lists ranked by the version the lookup saw are stored: a replica still serving the previous
version, or any fallback, never fills an entry that the current version's readers would get.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from gateway import metrics
from recsys_shared import keys
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.multiplexed import MultiplexedRedis
from recsys_shared.redis import REDIS_UNAVAILABLE_ERRORS
from recsys_shared.schemas import RecommendationQuery

T = TypeVar("T")

# KEYS: active model pointer, the user's meta hash. ARGV: the user's cache key prefix, the query
# digest. Returns {version, epoch, cached entry or false}; the key layout is keys.cache_user's.
_LOOKUP = """
local version = redis.call('GET', KEYS[1]) or '0'
local epoch = redis.call('HGET', KEYS[2], 'epoch') or '0'
local entry = redis.call('GET', ARGV[1] .. version .. ':' .. epoch .. ':' .. ARGV[2])
return {version, epoch, entry}
"""


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str
    version: int
    entry: str | None


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def query_digest(query: RecommendationQuery) -> str:
    return hashlib.blake2b(query.cache_fragment().encode(), digest_size=8).hexdigest()


# Bound once: labels() takes a lock and builds a key on every call.
_HITS, _MISSES = metrics.CACHE_REQUESTS.labels("hit"), metrics.CACHE_REQUESTS.labels("miss")


class ResponseCache:
    """Entries live on ``entries`` (the ephemeral Redis, see
    ``recsys_shared.redis.ephemeral_client``) or on ``client``, which holds the active version
    and the users' epochs."""

    def __init__(
        self,
        client: MultiplexedRedis,
        *,
        ttl_seconds: int,
        memory_guard: MemoryGuard | None = None,
        entries: MultiplexedRedis | None = None,
    ) -> None:
        self.redis = client
        self.entries = entries or client
        self.ttl_seconds = ttl_seconds
        self.memory_guard = memory_guard
        self._lookup = client.script(_LOOKUP)
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    async def lookup(self, user_id: str, query: RecommendationQuery) -> Lookup:
        digest = query_digest(query)
        if self.entries is self.redis:
            version, epoch, raw = await self._lookup(
                keys=[keys.MODEL_ACTIVE, keys.user_meta(user_id)],
                args=[keys.cache_user_prefix(user_id), digest],
            )
            key = keys.cache_user(user_id, int(version), epoch, digest)
        else:
            version, epoch = await self.redis.execute_many(
                [("GET", keys.MODEL_ACTIVE), ("HGET", keys.user_meta(user_id), "epoch")]
            )
            key = keys.cache_user(user_id, int(version or 0), epoch or "0", digest)
            raw = await self._entry(key)
        (_HITS if raw else _MISSES).inc()
        return Lookup(key=key, version=int(version or 0), entry=raw or None)

    async def _entry(self, key: str) -> str | None:
        """The entry from the ephemeral Redis; a miss if it cannot answer (losing it costs a
        recomputed list, not the request)."""
        try:
            entry: str | None = await self.entries.execute("GET", key)
        except REDIS_UNAVAILABLE_ERRORS as error:
            metrics.UPSTREAM_ERRORS.labels("ephemeral-redis", type(error).__name__).inc()
            return None
        return entry

    async def forget_user(self, user_id: str) -> None:
        """Delete every cached list of the user (erasure): a SCAN over their key prefix."""
        pattern = _glob_escape(keys.cache_user_prefix(user_id)) + "*"
        cursor = "0"
        while True:
            cursor, found = await self.entries.execute(
                "SCAN", cursor, "MATCH", pattern, "COUNT", 10_000
            )
            if found:
                await self.entries.execute("DEL", *found)
            if cursor == "0":
                return

    def store(self, lookup: Lookup, model_version: int | None, body: str) -> None:
        """Keep ``body`` (a list's JSON) if the version the lookup saw ranked it.

        Queued, not awaited: the answer does not wait for the cache, and a failed store
        (Redis gone) costs only a later miss; the next command on the connection is ordered
        after it all the same. Skipped while Redis is near its memory limit (see
        :mod:`recsys_shared.memory_guard`).
        """
        if model_version is None or model_version != lookup.version:
            return
        if self.memory_guard is not None and self.memory_guard.shed("cache"):
            return
        # "<stored at>\n<the response JSON>": served back as it is, no parsing on a hit.
        entry = f"{time.time()!r}\n{body}"
        self.entries.execute("SET", lookup.key, entry, "EX", self.ttl_seconds)

    async def single_flight(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """Concurrent misses for one key share one computation, so an expiring hot entry or a
        new model version does not send a stampede to the recommenders."""
        pending = self._in_flight.get(key)
        if pending is not None:
            metrics.CACHE_REQUESTS.labels("coalesced").inc()
            return cast(T, await asyncio.shield(pending))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await compute()
        except BaseException as error:
            future.set_exception(error)
            # Nobody may be waiting; retrieving the exception keeps asyncio from complaining.
            future.exception()
            raise
        finally:
            self._in_flight.pop(key, None)
        future.set_result(result)
        return result


# The stored JSON ends with these two fields (they are the last of Recommendations), as a
# freshly computed list has them; a hit swaps in its own values without parsing the body.
_FRESH_SUFFIX = '"cached":false,"cache_age_seconds":null}'


def cached_json(entry: str) -> str:
    """A stored entry as a response body: marked as cached, with its age."""
    stored_at, _, body = entry.partition("\n")
    age = round(max(time.time() - float(stored_at), 0.0), 3)
    if body.endswith(_FRESH_SUFFIX):
        return f'{body[: -len(_FRESH_SUFFIX)]}"cached":true,"cache_age_seconds":{age}}}'
    parsed: dict[str, Any] = json.loads(body)  # written by an older gateway: the slow way
    parsed.update(cached=True, cache_age_seconds=age)
    return json.dumps(parsed)
