#!lua
-- Refused at maxmemory: a cached list is worth less than the room it would take.
-- Keep one ranked list in its user's hash of cached lists (gateway.cache). The entry is
-- stamped with the nonce its lookup saw, so a list ranked before an event of the user (which
-- renews the nonce) is never served after it, whenever this write lands.
-- KEYS[1]: the user's hash (keys.cached_lists).
-- ARGV: the list's field, the entry, the hash's TTL (s), the nonce field, at most how many
--       fields (lists and the nonce) the hash holds.
-- A hash at that bound is started afresh, keeping only the nonce: the bound holds whatever
-- mix of queries a user sends, and each list dropped costs one miss.
local key, field, entry = KEYS[1], ARGV[1], ARGV[2]
local ttl, nonce_field, most = ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('HLEN', key) >= most and redis.call('HEXISTS', key, field) == 0 then
  local nonce = redis.call('HGET', key, nonce_field)
  redis.call('DEL', key)
  if nonce then redis.call('HSET', key, nonce_field, nonce) end
end
redis.call('HSET', key, field, entry)
redis.call('EXPIRE', key, ttl)
return 1
