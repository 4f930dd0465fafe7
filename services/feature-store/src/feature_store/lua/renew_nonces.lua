#!lua flags=allow-oom
-- Runs at maxmemory too: it makes cached lists stale, and frees more than it takes.
-- Renew the cache nonce of users whose events a batch applied (feature_store.cache_nonces):
-- each hash is replaced by one holding only the new nonce, so every list stamped with an
-- earlier nonce, cached before the batch or stored while it was applied, is gone or stale.
-- KEYS: the users' hashes of cached lists (keys.cached_lists: one partition's users, one slot).
-- ARGV[1]: the nonce field; ARGV[2]: the new nonce; ARGV[3]: the TTL (s) of the hash.
local field, nonce, ttl = ARGV[1], ARGV[2], ARGV[3]
for _, key in ipairs(KEYS) do
  redis.call('DEL', key)
  redis.call('HSET', key, field, nonce)
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
