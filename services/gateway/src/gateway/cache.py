"""The response cache for user recommendations: a hit is one Redis command.

A user's cached lists live in one hash (``keys.cached_lists``, on the ephemeral Redis when
there is one): a field per experiment variant and query, and the user's *nonce*, which the
feature-store renews after every batch that applies an event of the user
(``feature_store.cache_nonces``). An entry is stamped with the model version that ranked it,
the catalogue's count of removals (items deleted or made unavailable) and the nonce its lookup
saw; a lookup reads the nonce and the entry with one ``HMGET`` and uses the entry only if the
stamp still matches the active version and the removals (both followed in process, refreshed
on the registry's announcements, see ``recsys_shared.active_version``) and the nonce. A new
version, a removed item or a new event makes the old entries stale at once; nothing is
invalidated by hand, a fresher list overwrites an entry, and the hash expires with a TTL. Other
catalogue writes (a new item, a new title) leave entries as they are: a list without the new
item is still a list the contract allows, for up to ``CACHE_TTL_SECONDS``.

Only lists ranked by the version the lookup saw are stored: a replica still serving the previous
version, or any fallback, never fills an entry that the current version's readers would get.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar, cast

from gateway import metrics
from gateway.breaker import CircuitBreaker
from recsys_shared import keys
from recsys_shared.active_version import ActiveVersion
from recsys_shared.background import fire_and_forget
from recsys_shared.errors import StoreError, StoreUnavailable
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.redis import LuaScript, RedisClient
from recsys_shared.schemas import RecommendationQuery

T = TypeVar("T")
#: No experiment variant: the active version's lists.
NO_VARIANT = "-"
#: The stamp's nonce while the user's hash holds none (no event of theirs since it expired).
NO_NONCE = "-"
STORE = LuaScript.load(__package__, "lua/cache_store.lua")


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str
    field: str
    version: int | None  # None: nothing may be stored (no active version, or Redis away)
    nonce: str
    entry: str | None = None  # a hit: the stored list's JSON
    age_seconds: float = 0.0
    removals: int = 0

    @property
    def stamp(self) -> str:
        """What an entry must start with to be this lookup's list."""
        return f"{self.version}:{self.removals}:{self.nonce}:"


class CatalogueRemovals:
    """The catalogue's count of removals (``keys.CATALOGUE_REMOVALS``) as last read; ``None``
    until Redis first answers. It only grows, and a stale reading is lower: an entry stamped
    with it was ranked at or after that count, never before."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.current: int | None = None

    async def refresh(self) -> None:
        self.current = int(await self.redis.execute("GET", keys.CATALOGUE_REMOVALS) or 0)


@functools.lru_cache(maxsize=4096)  # a handful of distinct queries, each asked again and again
def query_digest(query: RecommendationQuery) -> str:
    return hashlib.blake2b(query.cache_fragment().encode(), digest_size=8).hexdigest()


# Bound once: labels() takes a lock and builds a key on every call.
_HITS, _MISSES = metrics.CACHE_REQUESTS.labels("hit"), metrics.CACHE_REQUESTS.labels("miss")


# eq=False: one live cache per replica (its flights in progress), compared by identity.
@dataclass(eq=False)
class ResponseCache:
    """``entries``: where the users' hashes live; ``active``: the version lists must be ranked
    by (outside experiments); ``removals``: the catalogue's, followed alike; ``breaker``: open
    while the entries' Redis does not answer, when a lookup is a miss at once rather than a
    wait for the command's timeout on every request (2 s each, measured with the ephemeral
    Redis killed)."""

    entries: RedisClient
    partitions: keys.Partitions
    active: ActiveVersion
    removals: CatalogueRemovals
    _: KW_ONLY
    breaker: CircuitBreaker | None = None
    ttl_seconds: int
    memory_guard: MemoryGuard | None = None
    _in_flight: dict[str, asyncio.Future[Any]] = field(init=False, default_factory=dict)

    async def lookup(
        self,
        user_id: str,
        query: RecommendationQuery,
        *,
        variant: str = NO_VARIANT,
        pinned_version: int | None = None,
    ) -> Lookup:
        """The entry for the user's list, if still valid. An experiment variant's entries
        (``variant``) are checked against the version it pins, not the active one. Redis
        not answering is a miss that stores nothing: losing the cache costs a recomputed
        list, not the request."""
        key = keys.cached_lists(self.partitions.of(user_id), user_id)
        field = keys.cache_field(variant, query_digest(query))
        version = self.active.current if pinned_version is None else pinned_version
        removals = self.removals.current
        if removals is None:  # not read yet: nothing to check an entry against
            version = None
        if self.breaker is not None and not self.breaker.allows():
            _MISSES.inc()
            return Lookup(key, field, None, NO_NONCE)  # version None: nothing is stored
        try:
            nonce, raw = await self.entries.execute("HMGET", key, keys.CACHE_NONCE, field)
        except (StoreUnavailable, StoreError) as error:
            metrics.UPSTREAM_ERRORS.labels("cache", type(error).__name__).inc()
            if self.breaker is not None and isinstance(error, StoreUnavailable):
                self.breaker.failed()
            _MISSES.inc()
            return Lookup(key, field, None, NO_NONCE)
        if self.breaker is not None:
            self.breaker.succeeded()
        lookup = Lookup(key, field, version, nonce or NO_NONCE, removals=removals or 0)
        stamp = lookup.stamp
        if version is not None and raw is not None and raw.startswith(stamp):
            # "<stored at>\n<the list's JSON>" after the stamp
            stored_at, _, body = raw[len(stamp) :].partition("\n")
            age = max(time.time() - float(stored_at), 0.0)
            if age <= self.ttl_seconds:  # the hash outlives an entry when others refresh it
                _HITS.inc()
                return Lookup(key, field, version, lookup.nonce, body, age, lookup.removals)
        _MISSES.inc()
        return lookup

    def store(self, lookup: Lookup, model_version: int | None, body: str) -> None:
        """Keep ``body`` (a list's JSON) if the version the lookup saw ranked it.

        Not awaited: the answer does not wait for the cache, and a failed store (Redis gone)
        costs only a later miss. Skipped while Redis is near its memory limit (see
        :mod:`recsys_shared.memory_guard`).
        """
        if lookup.version is None or model_version != lookup.version:
            return
        if self.memory_guard is not None and self.memory_guard.shed("cache"):
            return
        entry = f"{lookup.stamp}{time.time()!r}\n{body}"
        stored = self.entries.run(
            STORE,
            keys=[lookup.key],
            args=[
                lookup.field,
                entry,
                self.ttl_seconds,
                keys.CACHE_NONCE,
                keys.CACHE_LISTS_PER_USER,
            ],
        )
        fire_and_forget(stored, _count_failure)

    async def single_flight(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """Concurrent misses for one key share one computation, so an expiring hot entry or a
        new model version does not send a stampede to the recommenders."""
        pending = self._in_flight.get(key)
        if pending is not None:
            metrics.CACHE_REQUESTS.labels("coalesced").inc()
            try:
                return cast(T, await asyncio.shield(pending))
            except asyncio.CancelledError:
                if _cancelling():  # this request was cancelled itself
                    raise
            # The computation joined was cancelled with its own request (timed out, or its
            # client gone), not this one: compute, as the first to ask again.
            return await self.single_flight(key, compute)
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


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _count_failure(error: BaseException) -> None:
    metrics.UPSTREAM_ERRORS.labels("cache", type(error).__name__).inc()


# The stored JSON ends with these two fields (they are the last of Recommendations), as a
# freshly computed list has them; a hit swaps in its own values without parsing the body.
_FRESH_SUFFIX = '"cached":false,"cache_age_seconds":null}'


def cached_json(lookup: Lookup) -> str:
    """A hit's list as a response body: marked as cached, with its age."""
    body, age = lookup.entry or "", round(lookup.age_seconds, 3)
    if body.endswith(_FRESH_SUFFIX):
        return f'{body[: -len(_FRESH_SUFFIX)]}"cached":true,"cache_age_seconds":{age}}}'
    parsed: dict[str, Any] = json.loads(body)  # written by an older gateway: the slow way
    parsed.update(cached=True, cache_age_seconds=age)
    return json.dumps(parsed)
