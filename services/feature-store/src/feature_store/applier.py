"""Applying events to the features, exactly once in effect.

One Lua script applies a whole batch: for each event it sets the applied marker, updates the user's
history and the item's popularity, and acknowledges the stream entry, all in one atomic step.
A redelivered entry (consumer crash, claim by another replica) finds its marker and is only
acknowledged, so it never counts twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from recsys_shared import keys
from recsys_shared.schemas import MAX_WEIGHT, EventType, StoredEvent

# ARGV header (16 values) then 8 values per event:
#   stream id, event id, user id, item id, weight, timestamp, is-rating flag, popularity increment.
_APPLY = """
local applied_prefix, user_prefix, users_key = ARGV[1], ARGV[2], ARGV[3]
local items_suffix, times_suffix, meta_suffix = ARGV[4], ARGV[5], ARGV[6]
local popular_key, popular_category_prefix = ARGV[7], ARGV[8]
local item_prefix, unavailable_key = ARGV[9], ARGV[10]
local stream, group = ARGV[11], ARGV[12]
local marker_ttl, cap, max_weight, now = ARGV[13], tonumber(ARGV[14]), ARGV[15], ARGV[16]
local applied, duplicates = 0, 0
local acks, touched_users, popularity = {}, {}, {}
for i = 17, #ARGV, 8 do
  local stream_id, event_id, user, item = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local weight, ts, is_rating, increment = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  acks[#acks + 1] = stream_id
  if redis.call('SET', applied_prefix .. event_id, stream_id, 'NX', 'EX', marker_ttl) then
    local items_key = user_prefix .. user .. items_suffix
    if is_rating == '1' then
      redis.call('HSET', items_key, item, weight)
    elseif tonumber(redis.call('HINCRBYFLOAT', items_key, item, weight)) > tonumber(max_weight) then
      redis.call('HSET', items_key, item, max_weight)
    end
    -- GT: an older event never moves an item's latest-interaction time back.
    redis.call('ZADD', user_prefix .. user .. times_suffix, 'GT', ts, item)
    touched_users[user] = (touched_users[user] or 0) + 1
    local step = tonumber(increment)
    if step > 0 then popularity[item] = (popularity[item] or 0) + step end
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
  redis.call('HINCRBY', meta_key, 'epoch', count)
  redis.call('HSET', meta_key, 'updated_at', now)
  redis.call('SADD', users_key, user)
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
if #acks > 0 then redis.call('XACK', stream, group, unpack(acks)) end
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
        marker_ttl_seconds: int,
        half_life_days: float,
    ) -> None:
        self.redis = client
        self.history_cap = history_cap
        self.marker_ttl_seconds = marker_ttl_seconds
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
            keys.APPLIED_PREFIX,
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
            self.marker_ttl_seconds,
            self.history_cap,
            repr(MAX_WEIGHT),
            repr(now),
        ]
        for stream_id, event in entries:
            args.extend(
                (
                    stream_id,
                    event.event_id,
                    event.user_id,
                    event.item_id,
                    repr(event.weight),
                    repr(event.ts),
                    "1" if event.type is EventType.RATING else "0",
                    repr(self.popularity_increment(event)),
                )
            )
        applied, duplicates = await self._script(keys=[], args=args)
        return ApplyResult(int(applied), int(duplicates))
