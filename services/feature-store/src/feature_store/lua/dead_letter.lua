#!lua flags=allow-oom
-- Runs at maxmemory too: an entry moved here leaves the stream, to be trimmed.
-- Move entries that cannot be applied to the partition's dead letters and acknowledge them,
-- together (feature_store.dead_letters). As in apply.lua, the acknowledgement decides: an
-- entry no longer pending in the group (a consumer that claimed it from a stalled one, or the
-- stalled one, got there first) is counted as redelivered and not moved again; an entry of a
-- user erased after it was received is acknowledged and dropped, counted as erased.
-- KEYS[1]: the partition's events stream (every key below shares its hash tag).
-- ARGV[1]: the layout, JSON {dead, group, cap, erased, stats, dead_letters_field,
--          redelivered_field, erased_field, stream_id_field, reason_field, detail_field,
--          entry_field};
-- ARGV[2..]: sextuples (stream id, reason, detail, entry, the digest of the entry's user or ''
--            when it names none, when it was received or '').
-- Returns each entry's outcome, in order: 'moved', 'redelivered' or 'erased'.
local L = cjson.decode(ARGV[1])
local counts = {moved = 0, redelivered = 0, erased = 0}
local outcomes = {}

local function erased_since(stream_id, digest, received_at)
  -- apply.lua's test: received no later than its user's tombstone (none: never erased), by
  -- the entry's received_at ('' when it has none) or its id's millisecond, over by then.
  if digest == '' then return false end
  local erased = tonumber(redis.call('HGET', L.erased, digest) or '0')
  local entered_by = (tonumber(string.match(stream_id, '^%d+')) + 1) / 1000
  local received = tonumber(received_at)
  return (received ~= nil and received <= erased) or entered_by <= erased
end

for i = 2, #ARGV, 6 do
  local outcome = 'moved'
  if redis.call('XACK', KEYS[1], L.group, ARGV[i]) == 0 then
    outcome = 'redelivered'
  elseif erased_since(ARGV[i], ARGV[i + 4], ARGV[i + 5]) then
    outcome = 'erased'
  else
    redis.call('XADD', L.dead, 'MAXLEN', '~', L.cap, '*', L.stream_id_field, ARGV[i],
               L.reason_field, ARGV[i + 1], L.detail_field, ARGV[i + 2],
               L.entry_field, ARGV[i + 3])
  end
  counts[outcome] = counts[outcome] + 1
  outcomes[#outcomes + 1] = outcome
end
-- The counters move with the effects, so they stay exact through a crash.
redis.call('HINCRBY', L.stats, L.dead_letters_field, counts.moved)
if counts.redelivered > 0 then
  redis.call('HINCRBY', L.stats, L.redelivered_field, counts.redelivered)
end
if counts.erased > 0 then redis.call('HINCRBY', L.stats, L.erased_field, counts.erased) end
return outcomes
