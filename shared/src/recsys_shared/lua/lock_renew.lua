#!lua flags=allow-oom
-- Runs at maxmemory too: a training must not lose its lock because Redis is full.
-- Extend a lock's time if this holder still has it (recsys_shared.locks).
-- KEYS[1]: the lock; ARGV: the holder's token, the new time to live in milliseconds.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
