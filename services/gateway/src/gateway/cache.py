"""The response cache for user recommendations.

An entry is keyed by the user, the experiment variant and the query, and its value names the
model version that ranked the list and the user's epoch (bumped by the feature-store with every
applied event of the user): a lookup reads the active version, the user's epoch and the entry in
one round trip (two concurrent ones when the entries live on the ephemeral Redis), and uses the
entry only if both still match. A new version or a new event makes the old entry stale at once;
nothing is invalidated by hand, a fresher list overwrites it, and entries expire with a TTL.

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
from recsys_shared.background import fire_and_forget
from recsys_shared.errors import StoreUnavailable
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import RecommendationQuery

T = TypeVar("T")
#: No experiment variant: the active version's lists.
NO_VARIANT = "-"


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str
    version: int
    epoch: str
    entry: str | None


def _stamp(version: int, epoch: str) -> str:
    return f"{version}:{epoch}:"


def query_digest(query: RecommendationQuery) -> str:
    return hashlib.blake2b(query.cache_fragment().encode(), digest_size=8).hexdigest()


# Bound once: labels() takes a lock and builds a key on every call.
_HITS, _MISSES = metrics.CACHE_REQUESTS.labels("hit"), metrics.CACHE_REQUESTS.labels("miss")


class ResponseCache:
    """Entries live on ``entries`` (the ephemeral Redis when there is one); ``client`` holds
    the active version and the users' epochs."""

    def __init__(
        self,
        client: RedisClient,
        partitions: keys.Partitions,
        *,
        ttl_seconds: int,
        memory_guard: MemoryGuard | None = None,
        entries: RedisClient | None = None,
    ) -> None:
        self.redis = client
        self.partitions = partitions
        self.entries = entries or client
        self.ttl_seconds = ttl_seconds
        self.memory_guard = memory_guard
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    async def lookup(
        self,
        user_id: str,
        query: RecommendationQuery,
        *,
        variant: str = NO_VARIANT,
        pinned_version: int | None = None,
    ) -> Lookup:
        """The entry for the user's list, if still valid. An experiment variant's entries
        (``variant``) are checked against the version it pins, not the active one."""
        key = keys.cache_user(user_id, variant, query_digest(query))
        epoch_read = ("HGET", self.partitions.of(user_id).user_meta(user_id), keys.META_EPOCH)
        state = [("GET", keys.MODEL_ACTIVE), epoch_read] if pinned_version is None else [epoch_read]
        if self.entries is self.redis:
            *found, raw = await self.redis.execute_many([*state, ("GET", key)])
        else:
            found, raw = await asyncio.gather(self.redis.execute_many(state), self._entry(key))
        version, epoch = found if pinned_version is None else (pinned_version, found[0])
        lookup = Lookup(key=key, version=int(version or 0), epoch=epoch or "0", entry=None)
        stamp = _stamp(lookup.version, lookup.epoch)
        if raw is not None and raw.startswith(stamp):
            _HITS.inc()
            return Lookup(lookup.key, lookup.version, lookup.epoch, raw[len(stamp) :])
        _MISSES.inc()
        return lookup

    async def _entry(self, key: str) -> str | None:
        """The entry from the ephemeral Redis; a miss if it cannot answer (losing it costs a
        recomputed list, not the request)."""
        try:
            entry: str | None = await self.entries.execute("GET", key)
        except StoreUnavailable as error:
            metrics.UPSTREAM_ERRORS.labels("ephemeral-redis", type(error).__name__).inc()
            return None
        return entry

    def store(self, lookup: Lookup, model_version: int | None, body: str) -> None:
        """Keep ``body`` (a list's JSON) if the version the lookup saw ranked it.

        Not awaited: the answer does not wait for the cache, and a failed store (Redis gone)
        costs only a later miss. Skipped while Redis is near its memory limit (see
        :mod:`recsys_shared.memory_guard`).
        """
        if model_version is None or model_version != lookup.version:
            return
        if self.memory_guard is not None and self.memory_guard.shed("cache"):
            return
        # "<version>:<epoch>:<stored at>\n<the response JSON>": served back as it is.
        entry = f"{_stamp(lookup.version, lookup.epoch)}{time.time()!r}\n{body}"
        stored = self.entries.execute("SET", lookup.key, entry, "EX", self.ttl_seconds)
        fire_and_forget(stored, _count_failure)

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


def _count_failure(error: BaseException) -> None:
    metrics.UPSTREAM_ERRORS.labels("cache", type(error).__name__).inc()


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
