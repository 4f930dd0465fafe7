#!lua
-- Refused whole at maxmemory (a replay adds to the stream).
-- Put dead letters back into the events stream, each removed from the dead letters in the
-- same step (feature_store.dead_letters). A replayed event that still cannot be applied comes
-- back with its reason.
-- KEYS[1]: the partition's events stream; ARGV[1]: layout JSON {dead, event_field};
-- ARGV[2..]: pairs (dead letter id, event JSON).
-- Returns how many were replayed (a dead letter already gone is skipped).
local L = cjson.decode(ARGV[1])
local replayed = 0
for i = 2, #ARGV, 2 do
  if redis.call('XDEL', L.dead, ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], '*', L.event_field, ARGV[i + 1])
    replayed = replayed + 1
  end
end
return replayed
