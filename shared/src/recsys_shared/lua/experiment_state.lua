#!lua flags=allow-oom
-- Runs at maxmemory too: an experiment must be able to stop when Redis is full.
-- Save an experiment's state, unless it has ended already (a stop and a decision racing:
-- the first wins); an ended experiment is no longer the running one
-- (recsys_shared.experiments.store).
-- KEYS[1]: the running experiment's pointer; ARGV: the experiment's key, the state field,
--          the state JSON, the id, 1 if the new state has ended.
-- Returns 1 if saved, 0 if the experiment does not exist or had ended.
local stored = redis.call('HGET', ARGV[1], ARGV[2])
if not stored then return 0 end
if cjson.decode(stored).decision ~= 'running' then return 0 end
redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])
if ARGV[5] == '1' and redis.call('GET', KEYS[1]) == ARGV[4] then redis.call('DEL', KEYS[1]) end
return 1
