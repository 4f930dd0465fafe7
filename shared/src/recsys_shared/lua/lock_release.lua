#!lua flags=allow-oom
-- Runs at maxmemory too: it frees.
-- Release a lock if this holder still has it (recsys_shared.locks).
-- KEYS[1]: the lock; ARGV[1]: the holder's token.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
