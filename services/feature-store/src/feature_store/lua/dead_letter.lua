#!lua flags=allow-oom
-- Runs at maxmemory too: an entry moved here leaves the stream, to be trimmed.
-- Move entries that cannot be applied to the partition's dead letters and acknowledge them,
-- together (feature_store.dead_letters).
-- KEYS[1]: the partition's events stream (every key below shares its hash tag).
-- ARGV[1]: the layout, JSON {dead, group, cap, stats, dead_letters_field, stream_id_field,
--          reason_field, detail_field, entry_field};
-- ARGV[2..]: quadruples (stream id, reason, detail, entry).
-- Returns how many were moved.
local L = cjson.decode(ARGV[1])
local moved = 0
for i = 2, #ARGV, 4 do
  redis.call('XADD', L.dead, 'MAXLEN', '~', L.cap, '*', L.stream_id_field, ARGV[i],
             L.reason_field, ARGV[i + 1], L.detail_field, ARGV[i + 2], L.entry_field, ARGV[i + 3])
  redis.call('XACK', KEYS[1], L.group, ARGV[i])
  moved = moved + 1
end
redis.call('HINCRBY', L.stats, L.dead_letters_field, moved)
return moved
