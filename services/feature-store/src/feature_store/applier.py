"""Applying events to the features, exactly once in effect.

One Lua script applies a whole batch atomically. Each entry is acknowledged (XACK) first, inside
the script, and applied only if that acknowledgement is the one that removed it from the
group's pending list: an entry delivered twice (a consumer crash, a claim by another replica,
a slow consumer racing its claimer) is applied by whichever script acknowledges it first and
skipped by every other. The acknowledgement *is* the applied marker, so it costs nothing extra
and cannot expire. (The same event sent twice by a client never enters the stream twice: the
gateway's dedup marker sees to that within its window.)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from recsys_shared import keys
from recsys_shared.redis import REDIS_UNAVAILABLE_ERRORS
from recsys_shared.schemas import MAX_WEIGHT, EventType, StoredEvent

log = logging.getLogger(__name__)

# ARGV: 14 settings; the batch as one JSON array of
#   [stream id, user id, item id, weight, timestamp, is-rating (0/1), popularity increment,
#    event type, model version of its recommendation ('' if none), hit (0/1)]
# (one argument decoded by cjson in C, rather than ten per event packed by redis-py);
# then the pipeline counters hash, this second's applied counter and its TTL;
# then the drift window: this hour's item, user, event-type and online-hit hashes, their TTL.
_APPLY = """
local user_prefix, users_key = ARGV[1], ARGV[2]
local items_suffix, times_suffix, meta_suffix = ARGV[3], ARGV[4], ARGV[5]
local popular_key, popular_category_prefix = ARGV[6], ARGV[7]
local item_prefix, unavailable_key = ARGV[8], ARGV[9]
local stream, group = ARGV[10], ARGV[11]
local cap, max_weight, now = tonumber(ARGV[12]), ARGV[13], ARGV[14]
local applied, duplicates = 0, 0
local touched_users, popularity = {}, {}
local stats_key, second_key, second_ttl = ARGV[16], ARGV[17], ARGV[18]
local drift_items, drift_users, drift_types = ARGV[19], ARGV[20], ARGV[21]
local drift_hits, drift_ttl = ARGV[22], ARGV[23]
local item_events, type_events, rec_events, rec_hits = {}, {}, {}, {}
for _, event in ipairs(cjson.decode(ARGV[15])) do
  local stream_id, user, item = event[1], event[2], event[3]
  local weight, ts, is_rating, step = event[4], event[5], event[6], event[7]
  if redis.call('XACK', stream, group, stream_id) == 1 then
    local items_key = user_prefix .. user .. items_suffix
    if is_rating == 1 then
      redis.call('HSET', items_key, item, weight)
    elseif tonumber(redis.call('HINCRBYFLOAT', items_key, item, weight)) > tonumber(max_weight) then
      redis.call('HSET', items_key, item, max_weight)
    end
    -- GT: an older event never moves an item's latest-interaction time back.
    redis.call('ZADD', user_prefix .. user .. times_suffix, 'GT', ts, item)
    touched_users[user] = (touched_users[user] or 0) + 1
    if step > 0 then popularity[item] = (popularity[item] or 0) + step end
    item_events[item] = (item_events[item] or 0) + 1
    type_events[event[8]] = (type_events[event[8]] or 0) + 1
    local rec_version = event[9]
    if rec_version ~= '' then
      rec_events[rec_version] = (rec_events[rec_version] or 0) + 1
      if event[10] == 1 then rec_hits[rec_version] = (rec_hits[rec_version] or 0) + 1 end
    end
    applied = applied + 1
  else
    duplicates = duplicates + 1
  end
end
-- Per user and per item once a batch, not once an event: the same result, fewer commands.
for user, count in pairs(touched_users) do
  local items_key = user_prefix .. user .. items_suffix
  local times_key = user_prefix .. user .. times_suffix
  local size = redis.call('ZCARD', times_key)
  if size > cap then
    local evicted = redis.call('ZPOPMIN', times_key, size - cap)
    for j = 1, #evicted, 2 do redis.call('HDEL', items_key, evicted[j]) end
  end
  local meta_key = user_prefix .. user .. meta_suffix
  -- An epoch equal to this batch's count means the user is new (or was erased): list them.
  if redis.call('HINCRBY', meta_key, 'epoch', count) == count then
    redis.call('SADD', users_key, user)
  end
  redis.call('HSET', meta_key, 'updated_at', now)
  redis.call('HINCRBY', drift_users, user, count)
end
for item, step in pairs(popularity) do
  if redis.call('SISMEMBER', unavailable_key, item) == 0 then
    redis.call('ZINCRBY', popular_key, step, item)
    local categories = redis.call('HGET', item_prefix .. item, 'categories')
    if categories then
      for _, category in ipairs(cjson.decode(categories)) do
        redis.call('ZINCRBY', popular_category_prefix .. category, step, item)
      end
    end
  end
end
-- The drift window: per item, event type and recommending version once a batch.
if applied > 0 then
  for item, count in pairs(item_events) do redis.call('HINCRBY', drift_items, item, count) end
  for kind, count in pairs(type_events) do redis.call('HINCRBY', drift_types, kind, count) end
  local has_recs = false
  for version, count in pairs(rec_events) do
    redis.call('HINCRBY', drift_hits, version .. ':events', count)
    redis.call('HINCRBY', drift_hits, version .. ':hits', rec_hits[version] or 0)
    has_recs = true
  end
  redis.call('EXPIRE', drift_items, drift_ttl)
  redis.call('EXPIRE', drift_users, drift_ttl)
  redis.call('EXPIRE', drift_types, drift_ttl)
  if has_recs then redis.call('EXPIRE', drift_hits, drift_ttl) end
end
-- The counters move with the effects, so they stay exact through a crash.
redis.call('HINCRBY', stats_key, 'applied', applied)
redis.call('HINCRBY', stats_key, 'redelivered', duplicates)
redis.call('INCRBY', second_key, applied)
redis.call('EXPIRE', second_key, second_ttl)
return {applied, duplicates}
"""

#: Popularity is stored as weight · 2^((t − epoch) / half-life): ranks by time-decayed weight
#: without ever rewriting old scores. The epoch keeps exponents small for decades around it.
POPULARITY_EPOCH = 1_700_000_000.0


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int
    duplicates: int


class EventApplier:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        history_cap: int,
        half_life_days: float,
        records: aioredis.Redis | None = None,
    ) -> None:
        """``records`` is where the served-list records are (the ephemeral Redis, when the
        system has one), read to attribute events; ``client`` by default."""
        self.redis = client
        self.records = records or client
        self.history_cap = history_cap
        self.half_life_seconds = half_life_days * 86_400
        self._script = client.register_script(_APPLY)

    def popularity_increment(self, event: StoredEvent) -> float:
        exponent = (event.ts - POPULARITY_EPOCH) / self.half_life_seconds
        # Clamp so a timestamp centuries away cannot overflow a double.
        return event.weight * math.pow(2.0, max(min(exponent, 900.0), -900.0))

    async def apply(self, entries: list[tuple[str, StoredEvent]], *, now: float) -> ApplyResult:
        """Apply (stream id, event) pairs and acknowledge them, atomically per batch."""
        if not entries:
            return ApplyResult(0, 0)
        args: list[str | int | float] = [
            keys.USER_PREFIX,
            keys.USERS,
            keys.USER_ITEMS_SUFFIX,
            keys.USER_TIMES_SUFFIX,
            keys.USER_META_SUFFIX,
            keys.POPULAR,
            keys.POPULAR_CATEGORY_PREFIX,
            keys.ITEM_PREFIX,
            keys.UNAVAILABLE_ITEMS,
            keys.EVENTS_STREAM,
            keys.EVENTS_GROUP,
            self.history_cap,
            repr(MAX_WEIGHT),
            repr(now),
        ]
        served = await self._served_by(entries)
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
                *served.get(stream_id, ("", 0)),
            )
            for stream_id, event in entries
        ]
        hour = keys.drift_hour(now)
        args.extend(
            (
                json.dumps(batch),
                keys.PIPELINE_STATS,
                keys.pipeline_applied(int(now)),
                keys.THROUGHPUT_KEY_TTL_SECONDS,
                keys.drift_items(hour),
                keys.drift_users(hour),
                keys.drift_types(hour),
                keys.drift_hits(hour),
                keys.DRIFT_WINDOW_TTL_SECONDS,
            )
        )
        applied, duplicates = await self._script(keys=[], args=args)
        return ApplyResult(int(applied), int(duplicates))

    async def _served_by(
        self, entries: list[tuple[str, StoredEvent]]
    ) -> dict[str, tuple[str, int]]:
        """For events carrying a recommendation id: the version that served that list
        (``popular`` for a fallback list) and whether the event's item was in it. One MGET, and
        none at all when no event of the batch carries an id; expired records are not counted."""
        attributed = [(sid, event) for sid, event in entries if event.recommendation_id]
        if not attributed:
            return {}
        try:
            records = await self.records.mget(
                [keys.recommendation(event.recommendation_id or "") for _, event in attributed]
            )
        except REDIS_UNAVAILABLE_ERRORS as error:
            if self.records is self.redis:
                raise  # the main Redis: the batch is retried, as for any other read
            # The ephemeral Redis only: the events still apply, unattributed.
            log.warning("served-list records unreadable (%s): events left unattributed", error)
            return {}
        served: dict[str, tuple[str, int]] = {}
        for (stream_id, event), raw in zip(attributed, records, strict=True):
            if not raw:
                continue
            try:
                record = json.loads(raw)
                version = record.get("model_version")
                hit = 1 if event.item_id in record.get("items", ()) else 0
            except (ValueError, AttributeError, TypeError):
                continue
            served[stream_id] = (str(version) if version is not None else "popular", hit)
        return served
