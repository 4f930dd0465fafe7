#!lua flags=allow-oom
-- Runs at maxmemory too: what it writes the gateway already stored, and applying lets the
-- stream be trimmed, which frees more than applying takes. Atomic either way: a script is
-- refused whole or runs whole, never stops halfway.
-- Apply a batch of one partition's events to the features and acknowledge them, atomically
-- (feature_store.applier). Each entry is acknowledged first, and applied only if that XACK is
-- the one that removed it from the group's pending list: an entry delivered twice is applied
-- by whichever script acknowledges it first, and counted as redelivered by every other.
-- KEYS[1]: the partition's events stream (every key below shares its hash tag).
-- ARGV[1]: the layout, JSON (key names, field names and settings; see applier.py).
-- ARGV[2]: the batch, JSON: [[stream id, user, item, weight, ts, is_rating, popularity step,
--          event type, serving version or '' (attributed events), hit 0/1, received_at,
--          user digest, [[experiment, variant, on the list 0/1, purchase 0/1], ...]], ...]
-- Returns {applied, redelivered, erased}.
local L = cjson.decode(ARGV[1])
local stream = KEYS[1]
local cap, max_weight, now = tonumber(L.history_cap), tonumber(L.max_weight), L.now
local applied, redelivered, erased = 0, 0, 0
local touched, popularity, received = {}, {}, {}
local item_events, type_events, rec_events, rec_hits = {}, {}, {}, {}
local erased_at, experiments = {}, {}

local function count(experiment, field, by)
  -- Into the experiment's counters, summed over the batch.
  local counters = experiments[experiment]
  if counters == nil then
    counters = {}
    experiments[experiment] = counters
  end
  counters[field] = (counters[field] or 0) + by
end

local function erased_since(digest)
  -- When the user was erased (0: never), once per user per batch.
  local at = erased_at[digest]
  if at == nil then
    at = tonumber(redis.call('HGET', L.erased, digest) or '0')
    erased_at[digest] = at
  end
  return at
end

for _, event in ipairs(cjson.decode(ARGV[2])) do
  local stream_id, user, item = event[1], event[2], event[3]
  local weight, ts, is_rating, step = event[4], event[5], event[6], event[7]
  if redis.call('XACK', stream, L.group, stream_id) == 0 then
    redelivered = redelivered + 1
  elseif event[11] <= erased_since(event[12]) then
    erased = erased + 1  -- sent before its user was erased: never resurrects them
  else
    local items_key = L.user_prefix .. user .. L.items_suffix
    if is_rating == 1 then
      redis.call('HSET', items_key, item, weight)
    elseif tonumber(redis.call('HINCRBYFLOAT', items_key, item, weight)) > max_weight then
      redis.call('HSET', items_key, item, max_weight)
    end
    -- GT: an older event never moves an item's latest-interaction time back.
    redis.call('ZADD', L.user_prefix .. user .. L.times_suffix, 'GT', ts, item)
    touched[user] = (touched[user] or 0) + 1
    if event[11] > (received[user] or 0) then received[user] = event[11] end
    if step > 0 then popularity[item] = (popularity[item] or 0) + step end
    item_events[item] = (item_events[item] or 0) + 1
    type_events[event[8]] = (type_events[event[8]] or 0) + 1
    local served_by = event[9]
    if served_by ~= '' then
      rec_events[served_by] = (rec_events[served_by] or 0) + 1
      if event[10] == 1 then rec_hits[served_by] = (rec_hits[served_by] or 0) + 1 end
    end
    for _, attribution in ipairs(event[13] or {}) do
      local experiment, variant = attribution[1], attribution[2]
      count(experiment, variant .. L.variant_events, 1)
      count(experiment, variant .. L.variant_clicks, attribution[3])
      count(experiment, variant .. L.variant_conversions, attribution[4])
    end
    applied = applied + 1
  end
end

-- Per user and per item once a batch, not once an event: the same result, fewer commands.
for user, count in pairs(touched) do
  local items_key = L.user_prefix .. user .. L.items_suffix
  local times_key = L.user_prefix .. user .. L.times_suffix
  local size = redis.call('ZCARD', times_key)
  if size > cap then
    local evicted = redis.call('ZPOPMIN', times_key, size - cap)
    for j = 1, #evicted, 2 do redis.call('HDEL', items_key, evicted[j]) end
  end
  local meta_key = L.user_prefix .. user .. L.meta_suffix
  redis.call('HINCRBY', meta_key, L.epoch_field, count)
  redis.call('HSET', meta_key, L.updated_at_field, now)
  -- Who exists, and when they were last heard from (the retention clock: server time).
  redis.call('ZADD', L.users, 'GT', received[user], user)
  redis.call('HINCRBY', L.drift_users, user, count)
end
for item, step in pairs(popularity) do
  redis.call('ZINCRBY', L.popular, step, item)
  redis.call('SADD', L.popular_dirty, item)
end
if applied > 0 then
  for item, count in pairs(item_events) do redis.call('HINCRBY', L.drift_items, item, count) end
  for kind, count in pairs(type_events) do redis.call('HINCRBY', L.drift_types, kind, count) end
  local has_recs = false
  for served_by, count in pairs(rec_events) do
    redis.call('HINCRBY', L.drift_hits, served_by .. L.hit_events_suffix, count)
    redis.call('HINCRBY', L.drift_hits, served_by .. L.hit_hits_suffix, rec_hits[served_by] or 0)
    has_recs = true
  end
  redis.call('EXPIRE', L.drift_items, L.drift_ttl)
  redis.call('EXPIRE', L.drift_users, L.drift_ttl)
  redis.call('EXPIRE', L.drift_types, L.drift_ttl)
  if has_recs then redis.call('EXPIRE', L.drift_hits, L.drift_ttl) end
end
for experiment, counters in pairs(experiments) do
  for field, by in pairs(counters) do
    if by > 0 then redis.call('HINCRBY', L.experiment_prefix .. experiment, field, by) end
  end
end
-- The counters move with the effects, so they stay exact through a crash.
redis.call('HINCRBY', L.stats, L.applied_field, applied)
redis.call('HINCRBY', L.stats, L.redelivered_field, redelivered)
if erased > 0 then redis.call('HINCRBY', L.stats, L.erased_field, erased) end
redis.call('INCRBY', L.second, applied)
redis.call('EXPIRE', L.second, L.second_ttl)
return {applied, redelivered, erased}
