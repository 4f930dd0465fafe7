#!lua flags=allow-oom
-- Runs at maxmemory too: it makes cached lists stale, and frees more than it takes.
-- Renew the cache nonce of users whose events a batch applies (feature_store.cache_nonces):
-- every list cached for them is stamped with the old nonce, so no gateway serves it again.
-- KEYS: the users' hashes of cached lists (keys.cached_lists: one partition's users, one slot).
-- ARGV[1]: the nonce field; ARGV[2]: the new nonce; ARGV[3]: the TTL (s) of a hash made here;
-- ARGV[4]: 'before' the batch is applied (only hashes that exist: with no hash there is no
--          list to make stale), or 'after' it (each hash replaced by one holding only the new
--          nonce: a list stored meanwhile was stamped 'before' and may predate the batch).
local field, nonce, ttl, after = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'after'
for _, key in ipairs(KEYS) do
  if after then
    redis.call('DEL', key)
    redis.call('HSET', key, field, nonce)
    redis.call('EXPIRE', key, ttl)
  elseif redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, field, nonce)
  end
end
return #KEYS
