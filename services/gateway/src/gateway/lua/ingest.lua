#!lua
-- Refused whole at maxmemory (a 503 and Retry-After): never markers without their events.
-- Store one partition's share of an events batch, once per (user, event_id) within the
-- idempotency window (gateway.ingest). Atomic: an error stores nothing of this call.
-- KEYS[1]: the partition's events stream (every key below shares its hash tag).
-- ARGV[1]: the layout, JSON: {stats, second, second_ttl, backlog_limit, user_prefix,
--          markers_suffix, window, now, event_field, accepted_field, duplicates_field,
--          record_bytes, digest_bytes}
-- ARGV[2..]: triples (user id, 8-byte event_id digest or '' when the client sent none,
--          the stored event JSON).
-- Returns {accepted, duplicates}, or {-1, backlog} when the partition's backlog is full.
--
-- Markers: one string per user of 12-byte records (digest, then the second it was stored),
-- appended in time order, so the expired ones are always a prefix, cut when the user writes.
local stream = KEYS[1]
local layout = cjson.decode(ARGV[1])
local limit = tonumber(layout.backlog_limit)
if limit > 0 then
  local backlog = redis.call('XLEN', stream)
  if backlog >= limit then return {-1, backlog} end
end
local record, digest_bytes = tonumber(layout.record_bytes), tonumber(layout.digest_bytes)
local window, now = tonumber(layout.window), tonumber(layout.now)
local cutoff = now - window
local stamp = struct.pack('>I4', now)
local users = {}

local function markers_of(user)
  local state = users[user]
  if state then return state end
  local key = layout.user_prefix .. user .. layout.markers_suffix
  -- GETEX restarts the key's time to live as it reads, so appending below needs no EXPIRE:
  -- a user's markers live one window past their last batch.
  local found = redis.call('GETEX', key, 'EX', window)
  local blob = found or ''
  local keep = 1
  while keep + record - 1 <= #blob and struct.unpack('>I4', blob, keep + digest_bytes) < cutoff do
    keep = keep + record
  end
  state = {key = key, blob = string.sub(blob, keep), pruned = keep > 1, existed = found ~= false,
           added = {}, new = {}, lookups = 0, index = nil}
  users[user] = state
  return state
end

local function indexed(state)
  -- Many lookups for one user in one call: a table of its digests, built once.
  if not state.index then
    state.index = {}
    for at = 1, #state.blob, record do
      state.index[string.sub(state.blob, at, at + digest_bytes - 1)] = true
    end
  end
  return state.index
end

local function seen(state, digest)
  if state.new[digest] then return true end
  state.lookups = state.lookups + 1
  if state.lookups > 8 then return indexed(state)[digest] == true end
  local from = 1
  while true do
    local at = string.find(state.blob, digest, from, true)
    if not at then return false end
    if (at - 1) % record == 0 then return true end
    from = at + 1
  end
end

local accepted, duplicates = 0, 0
for i = 2, #ARGV, 3 do
  local user, digest = ARGV[i], ARGV[i + 1]
  local fresh = true
  if digest ~= '' then
    local state = markers_of(user)
    if seen(state, digest) then
      fresh = false
    else
      state.new[digest] = true
      state.added[#state.added + 1] = digest .. stamp
    end
  end
  if fresh then
    redis.call('XADD', stream, '*', layout.event_field, ARGV[i + 2])
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
for _, state in pairs(users) do
  local added = table.concat(state.added)
  if state.pruned and #state.blob + #added == 0 then
    redis.call('DEL', state.key)
  elseif state.pruned or (not state.existed and #added > 0) then
    redis.call('SET', state.key, state.blob .. added, 'EX', window)
  elseif #added > 0 then
    redis.call('APPEND', state.key, added)
  end
end
redis.call('HINCRBY', layout.stats, layout.accepted_field, accepted)
redis.call('HINCRBY', layout.stats, layout.duplicates_field, duplicates)
redis.call('INCRBY', layout.second, accepted)
redis.call('EXPIRE', layout.second, layout.second_ttl)
return {accepted, duplicates}
