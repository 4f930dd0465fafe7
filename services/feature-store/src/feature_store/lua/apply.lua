#!lua flags=allow-oom
-- Runs at maxmemory too: what it writes the gateway already stored, and applying lets the
-- stream be trimmed, which frees more than applying takes. Atomic either way: a script is
-- refused whole or runs whole, never stops halfway.
-- Apply a batch of one partition's events to the features and acknowledge them, atomically
-- (feature_store.applier). An entry is applied only if it is still in the group's pending
-- list, and acknowledged in the same script: an entry delivered twice is applied by whichever
-- script acknowledges it first, and counted as redelivered by every other.
-- KEYS[1]: the partition's events stream (every key below shares its hash tag).
-- ARGV[1]: the layout, JSON (key names, field names, settings and the batch's lowest and
--          highest stream ids; see applier.py).
-- ARGV[2]: the batch, JSON: [[stream id, user, item, weight, ts, is_rating, popularity step,
--          event type, serving version or '' (attributed events), hit 0/1, received_at,
--          user digest, [[experiment, its events, clicks and conversions fields,
--          on the list 0/1, purchase 0/1], ...]], ...]
-- Returns {applied, redelivered, erased, the users whose events were applied}.
local L = cjson.decode(ARGV[1])
local batch = cjson.decode(ARGV[2])
local stream = KEYS[1]
local cap, max_weight, now = tonumber(L.history_cap), tonumber(L.max_weight), L.now
local applied, redelivered, erased = 0, 0, 0
local touched, grown, popularity, received = {}, {}, {}, {}
local item_events, type_events, rec_events, rec_hits = {}, {}, {}, {}
local experiments = {}
-- Values per call where one command takes many: Lua's unpack() refuses a few thousand.
local CHUNK = 1000

local function in_chunks(head, values)
  -- One command for many values (members, fields, ids) rather than one per value.
  for from = 1, #values, CHUNK do
    local args = {unpack(head)}
    for i = from, math.min(from + CHUNK - 1, #values) do args[#args + 1] = values[i] end
    redis.call(unpack(args))
  end
end

local function still_pending()
  -- The batch's entries still pending in the group, from one XPENDING over their id range
  -- (one command, not one XACK per entry); nil if that range holds more entries than asked
  -- for (other consumers' interleaved), and then each entry is acknowledged on its own.
  local limit = 2 * #batch + 100
  local rows = redis.call('XPENDING', stream, L.group, L.lowest_id, L.highest_id, limit)
  if #rows >= limit then return nil end
  local pending = {}
  for _, row in ipairs(rows) do pending[row[1]] = true end
  return pending
end

local function erased_at_of()
  -- When each of the batch's users was erased (0: never), one HMGET for the whole batch.
  local digests, seen = {}, {}
  for _, event in ipairs(batch) do
    if not seen[event[12]] then
      seen[event[12]] = true
      digests[#digests + 1] = event[12]
    end
  end
  local at = {}
  for from = 1, #digests, CHUNK do
    local part = {unpack(digests, from, math.min(from + CHUNK - 1, #digests))}
    local found = redis.call('HMGET', L.erased, unpack(part))
    for i, digest in ipairs(part) do at[digest] = tonumber(found[i] or '0') end
  end
  return at
end

local function count(experiment, field, by)
  -- Into the experiment's counters, summed over the batch.
  local counters = experiments[experiment]
  if counters == nil then
    counters = {}
    experiments[experiment] = counters
  end
  counters[field] = (counters[field] or 0) + by
end

local pending = still_pending()
local erased_at = erased_at_of()

local function sent_before_erasure(event)
  -- Received no later than its user's tombstone, by either clock: the gateway's received_at,
  -- or the entry's id (this Redis's clock, which stamped the tombstone: the millisecond it
  -- names was over by then), so a gateway whose clock runs ahead cannot slip in an event sent
  -- before the erasure. Within the hosts' skew the erasure wins: an event sent just after it
  -- by a gateway whose clock runs behind is dropped too.
  local erased = erased_at[event[12]]
  local entered_by = (tonumber(string.match(event[1], '^%d+')) + 1) / 1000
  return event[11] <= erased or entered_by <= erased
end

local acknowledged = {}

local function claim(stream_id)
  -- True for the one delivery of an entry that applies it: it was pending, and no earlier
  -- entry of this batch (the same id twice) took it.
  if pending == nil then return redis.call('XACK', stream, L.group, stream_id) == 1 end
  if not pending[stream_id] then return false end
  pending[stream_id] = nil
  acknowledged[#acknowledged + 1] = stream_id
  return true
end

for _, event in ipairs(batch) do
  local stream_id, user, item = event[1], event[2], event[3]
  local weight, ts, is_rating, step = event[4], event[5], event[6], event[7]
  if not claim(stream_id) then
    redelivered = redelivered + 1
  elseif sent_before_erasure(event) then
    erased = erased + 1  -- sent before its user was erased: never resurrects them
  else
    local items_key = L.user_prefix .. user .. L.items_suffix
    if is_rating == 1 then
      redis.call('HSET', items_key, item, weight)
    elseif tonumber(redis.call('HINCRBYFLOAT', items_key, item, weight)) > max_weight then
      redis.call('HSET', items_key, item, max_weight)
    end
    -- GT: an older event never moves an item's latest-interaction time back. Only a new
    -- member can take the history past its cap.
    if redis.call('ZADD', L.user_prefix .. user .. L.times_suffix, 'GT', ts, item) == 1 then
      grown[user] = true
    end
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
      local experiment = attribution[1]
      count(experiment, attribution[2], 1)
      count(experiment, attribution[3], attribution[5])
      count(experiment, attribution[4], attribution[6])
    end
    applied = applied + 1
  end
end
in_chunks({'XACK', stream, L.group}, acknowledged)

-- Per user and per item once a batch, not once an event: the same result, fewer commands.
local last_heard, applied_users = {}, {}
for user, count in pairs(touched) do
  applied_users[#applied_users + 1] = user
  if grown[user] then
    local items_key = L.user_prefix .. user .. L.items_suffix
    local times_key = L.user_prefix .. user .. L.times_suffix
    local size = redis.call('ZCARD', times_key)
    if size > cap then
      local evicted = redis.call('ZPOPMIN', times_key, size - cap)
      for j = 1, #evicted, 2 do redis.call('HDEL', items_key, evicted[j]) end
    end
  end
  local meta_key = L.user_prefix .. user .. L.meta_suffix
  redis.call('HINCRBY', meta_key, L.epoch_field, count)
  redis.call('HSET', meta_key, L.updated_at_field, now)
  redis.call('HINCRBY', L.drift_users, user, count)
  last_heard[#last_heard + 1] = received[user]
  last_heard[#last_heard + 1] = user
end
-- Who exists, and when they were last heard from (the retention clock: server time).
in_chunks({'ZADD', L.users, 'GT'}, last_heard)
local changed = {}
for item, step in pairs(popularity) do
  redis.call('ZINCRBY', L.popular, step, item)
  changed[#changed + 1] = item
end
in_chunks({'SADD', L.popular_dirty}, changed)
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
return {applied, redelivered, erased, applied_users}
