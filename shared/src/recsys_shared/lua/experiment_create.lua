#!lua
-- Refused whole at maxmemory.
-- Start an experiment, unless one is running (recsys_shared.experiments.store).
-- KEYS[1]: the running experiment's pointer (every key below shares the {experiments} tag).
-- ARGV: the sequence key, the experiments set, the experiment key prefix, the definition and
--       state field names, the definition JSON, the state JSON, now.
-- Returns the new id, or {err = 'RUNNING <id>'}.
local running = redis.call('GET', KEYS[1])
if running then return redis.error_reply('RUNNING ' .. running) end
local id = tostring(redis.call('INCR', ARGV[1]))
redis.call('HSET', ARGV[3] .. id, ARGV[4], ARGV[6], ARGV[5], ARGV[7])
redis.call('ZADD', ARGV[2], ARGV[8], id)
redis.call('SET', KEYS[1], id)
return id
