"""Applying a partition's events to the features, exactly once in effect.

One Lua script (``lua/apply.lua``) applies a batch atomically on the partition's slot: it
applies an entry only if the entry is still in the group's pending list (one ``XPENDING`` over
the batch's id range), and acknowledges it (``XACK``) in the same script, so an entry delivered
twice (a crash, a claim by another replica) is applied once; the acknowledgement *is* the
applied marker. An entry sent before its user was erased is acknowledged and dropped, so it
cannot bring the user back.

The work is split in two (:meth:`EventApplier.prepare`, then :meth:`EventApplier.run`) so that
the consumer can prepare one batch while Redis runs the script of the one before.

An event that names the list it came from (``recommendation_id``) is attributed to the version
that ranked it (a drift metric, from the records on the ephemeral Redis) and, for a list an
experiment served, to the experiment's variant (and its shadow's ranking, if any), from the
lists kept on the data tier (``recsys_shared.experiments.lists``): the same script counts them
in the partition's experiment hash, so each counts once however often it is delivered.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import to_json

from feature_store.cache_nonces import CacheNonces
from recsys_shared import keys
from recsys_shared.errors import StoreUnavailable
from recsys_shared.experiments.assignment import group
from recsys_shared.experiments.lists import ExperimentLists, is_experiment_id
from recsys_shared.redis import LuaScript, RedisClient
from recsys_shared.schemas import MAX_WEIGHT, EventType, ServedList, StoredEvent

log = logging.getLogger(__name__)

APPLY = LuaScript.load(__package__, "lua/apply.lua")

#: Popularity is stored as weight · 2^((t − epoch) / half-life): ranks by time-decayed weight
#: without ever rewriting old scores. The epoch keeps exponents small for decades around it.
POPULARITY_EPOCH = 1_700_000_000.0


#: What one event adds to an experiment: (experiment, its variant's events, clicks and
#: conversions counters for the user's group, on an item of the list 0/1, a purchase 0/1).
Attribution = tuple[str, str, str, str, int, int]
#: The version that served an event's list ('popular' for a fallback) and whether its item
#: was on it, plus what it adds to experiments.
_Served = tuple[str, int, list[Attribution]]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch ready for the apply script: its partition and the script's arguments."""

    partition: keys.Partition
    args: list[str | bytes]


def _stream_order(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence)


def min_max_ids(stream_ids: Sequence[str]) -> tuple[str, str]:
    """The lowest and highest of stream ids (by their numbers, as Redis orders them)."""
    return min(stream_ids, key=_stream_order), max(stream_ids, key=_stream_order)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    duplicates: int
    erased: int = 0


class EventApplier:
    def __init__(
        self,
        client: RedisClient,
        *,
        history_cap: int,
        half_life_days: float,
        records: RedisClient | None = None,
        experiment_lists: ExperimentLists | None = None,
        nonces: CacheNonces | None = None,
    ) -> None:
        """``records`` is where the served-list records are (the ephemeral Redis, when the
        system has one), read to attribute events; ``client`` by default. Experiments'
        lists are read from ``experiment_lists`` (none: not attributed to experiments).
        ``nonces`` makes the lists cached for a batch's users stale (none: no cache)."""
        self.redis = client
        self.records = records or client
        self.experiment_lists = experiment_lists
        self.nonces = nonces
        self.history_cap = history_cap
        self.half_life_seconds = half_life_days * 86_400

    def popularity_increment(self, event: StoredEvent) -> float:
        exponent = (event.ts - POPULARITY_EPOCH) / self.half_life_seconds
        # Clamp so a timestamp centuries away cannot overflow a double.
        return max(event.weight, 0.0) * math.pow(2.0, max(min(exponent, 900.0), -900.0))

    async def apply(
        self, partition: keys.Partition, entries: list[tuple[str, StoredEvent]], *, now: float
    ) -> ApplyResult:
        """Apply (stream id, event) pairs of one partition and acknowledge them, atomically;
        the lists cached for their users are stale when this returns."""
        result = await self.run(await self.prepare(partition, entries, now=now))
        await self.settle()
        return result

    async def settle(self) -> None:
        """Wait for the cache renewals still running after the batches applied so far."""
        if self.nonces is not None:
            await self.nonces.settle()

    async def prepare(
        self, partition: keys.Partition, entries: list[tuple[str, StoredEvent]], *, now: float
    ) -> PreparedBatch | None:
        """What :meth:`run` sends: this process's share of the work (attribution reads, the
        script's arguments), done apart so that it can overlap an earlier batch's script."""
        if not entries:
            return None
        served = await self._served_by(entries)
        served.update(await self._served_in_experiments(entries))
        digests: dict[str, str] = {}
        batch = [
            (
                stream_id,
                event.user_id,
                event.item_id,
                event.weight,
                event.ts,
                1 if event.type is EventType.RATING else 0,
                self.popularity_increment(event),
                event.type.value,
                *served.get(stream_id, _NOT_SERVED)[:2],
                event.received_at,
                digests.get(event.user_id)
                or digests.setdefault(event.user_id, keys.user_digest(event.user_id)),
                served.get(stream_id, _NOT_SERVED)[2],
            )
            for stream_id, event in entries
        ]
        low, high = min_max_ids([stream_id for stream_id, _ in entries])
        return PreparedBatch(
            partition,
            # pydantic-core's encoder: a fifth of the stdlib's time for these float-heavy rows,
            # the same shortest round-trip digits.
            [json.dumps(self._layout(partition, now, low, high)), to_json(batch)],
        )

    async def run(self, prepared: PreparedBatch | None) -> ApplyResult:
        """Apply a prepared batch and acknowledge its entries, atomically (one script), then
        start making the lists cached for its users stale (see ``cache_nonces``)."""
        if prepared is None:
            return ApplyResult(0, 0)
        applied, redelivered, erased, users = await self.redis.run(
            APPLY, keys=[prepared.partition.events], args=prepared.args
        )
        if self.nonces is not None:
            await self.nonces.renew(prepared.partition, users)
        return ApplyResult(int(applied), int(redelivered), int(erased))

    def _layout(
        self, partition: keys.Partition, now: float, low: str, high: str
    ) -> dict[str, object]:
        bucket = partition.drift(keys.drift_hour(now))
        return {
            "group": keys.EVENTS_GROUP,
            "lowest_id": low,
            "highest_id": high,
            "history_cap": self.history_cap,
            "max_weight": MAX_WEIGHT,
            "now": now,
            "user_prefix": partition.user_prefix,
            "items_suffix": keys.USER_ITEMS_SUFFIX,
            "times_suffix": keys.USER_TIMES_SUFFIX,
            "meta_suffix": keys.USER_META_SUFFIX,
            "epoch_field": keys.META_EPOCH,
            "updated_at_field": keys.META_UPDATED_AT,
            "users": partition.users,
            "erased": partition.erased,
            "popular": partition.popular,
            "popular_dirty": partition.popular_dirty,
            "drift_items": bucket.items,
            "drift_users": bucket.users,
            "drift_types": bucket.types,
            "drift_hits": bucket.hits,
            "drift_ttl": keys.DRIFT_WINDOW_TTL_SECONDS,
            "hit_events_suffix": keys.HIT_EVENTS_SUFFIX,
            "hit_hits_suffix": keys.HIT_HITS_SUFFIX,
            "stats": partition.stats,
            "applied_field": keys.STAT_APPLIED,
            "redelivered_field": keys.STAT_REDELIVERED,
            "erased_field": keys.STAT_ERASED,
            "experiment_prefix": partition.experiment_prefix,
            "second": partition.applied(int(now)),
            "second_ttl": keys.THROUGHPUT_KEY_TTL_SECONDS,
        }

    async def _served_by(self, entries: list[tuple[str, StoredEvent]]) -> dict[str, _Served]:
        """For events carrying a recommendation id: the version that served that list
        (``popular`` for a fallback list) and whether the event's item was in it. One MGET, and
        none at all when no event of the batch carries an id; expired records are not counted.
        A list is looked up under the event's user, then as a list served to nobody in
        particular (similar or popular items)."""
        attributed = [
            (sid, event)
            for sid, event in entries
            if event.recommendation_id and not is_experiment_id(event.recommendation_id)
        ]
        if not attributed:
            return {}
        names: list[str] = []
        for _, event in attributed:
            rid = event.recommendation_id or ""
            names += [keys.recommendation(event.user_id, rid), keys.recommendation(None, rid)]
        try:
            records = await self.records.execute("MGET", *names)
        except StoreUnavailable as error:
            if self.records is self.redis:
                raise  # the main Redis: the batch is retried, as for any other read
            # The ephemeral Redis only: the events still apply, unattributed.
            log.warning("served-list records unreadable (%s): events left unattributed", error)
            return {}
        served: dict[str, _Served] = {}
        for index, (stream_id, event) in enumerate(attributed):
            record = _parsed(records[2 * index] or records[2 * index + 1])
            if record is not None:
                served[stream_id] = (_served_version(record), _on(record, event), [])
        return served

    async def _served_in_experiments(
        self, entries: list[tuple[str, StoredEvent]]
    ) -> dict[str, _Served]:
        """For events naming a list an experiment served: its variant's attribution, and the
        shadow's if the request was ranked by one too. Read from the data tier (a failure
        retries the batch); a list past its window (expired) is not attributed."""
        by_user: dict[str, list[tuple[str, StoredEvent]]] = {}
        for stream_id, event in entries:
            if self.experiment_lists is not None and is_experiment_id(
                event.recommendation_id or ""
            ):
                by_user.setdefault(event.user_id, []).append((stream_id, event))
        if not by_user or self.experiment_lists is None:
            return {}
        found = await self.experiment_lists.served_to_users(
            {
                user: [event.recommendation_id or "" for _, event in listed]
                for user, listed in by_user.items()
            }
        )
        served: dict[str, _Served] = {}
        for user, listed in by_user.items():
            for (stream_id, event), (raw, shadow_raw) in zip(listed, found[user], strict=True):
                record = _parsed(raw)
                if record is None or record.experiment is None or record.variant is None:
                    continue
                attributions = [_attribution(record, event)]
                shadow = _parsed(shadow_raw)
                if shadow is not None and shadow.experiment is not None and shadow.variant:
                    attributions.append(_attribution(shadow, event))
                served[stream_id] = (_served_version(record), _on(record, event), attributions)
        return served


_NOT_SERVED: _Served = ("", 0, [])


def _parsed(raw: str | None) -> ServedList | None:
    if not raw:
        return None
    try:
        return ServedList.model_validate_json(raw)
    except ValidationError:
        return None


def _served_version(record: ServedList) -> str:
    return str(record.model_version) if record.model_version is not None else "popular"


def _on(record: ServedList, event: StoredEvent) -> int:
    return 1 if event.item_id in record.items else 0


def _attribution(record: ServedList, event: StoredEvent) -> Attribution:
    on_list = _on(record, event)
    purchase = 1 if on_list and event.type is EventType.PURCHASE else 0
    experiment, variant = record.experiment or "", record.variant or ""
    number = group(experiment, event.user_id)
    events, clicks, conversions = (
        keys.variant_counter(variant, number, suffix)
        for suffix in (keys.VARIANT_EVENTS, keys.VARIANT_CLICKS, keys.VARIANT_CONVERSIONS)
    )
    return (experiment, events, clicks, conversions, on_list, purchase)
