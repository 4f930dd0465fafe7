#!lua
-- Refused whole at maxmemory: the list is served anyway, unattributed (counted by the caller).
-- Keep lists an experiment served a user, and count them (recsys_shared.experiments.lists).
-- KEYS[1]: the user's lists hash; KEYS[2]: the partition's experiment hash; KEYS[3]: the
--          partition's erasure tombstones (one slot).
-- ARGV: ttl ms, the most lists kept, the user's digest, when the list was ranked, how many
--       field/value pairs follow, the pairs (recommendation id → ServedList JSON), then
--       counter/increment pairs for KEYS[2].
-- The hash expires ttl after its newest list; past the cap, the oldest lists go first. A list
-- ranked before its user was erased is not kept (its write may arrive after the erasure).
-- Returns the lists held, or -1 if the user was erased since.
local ttl, cap, digest, ranked_at = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local erased_at = tonumber(redis.call('HGET', KEYS[3], digest) or '0')
if erased_at >= ranked_at then return -1 end
local at = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HSET', KEYS[1], ARGV[at], ARGV[at + 1])
  at = at + 2
end
redis.call('PEXPIRE', KEYS[1], ttl)
while at < #ARGV do
  redis.call('HINCRBY', KEYS[2], ARGV[at], ARGV[at + 1])
  at = at + 2
end
local size = redis.call('HLEN', KEYS[1])
if size > cap then
  -- Rare (a user served more lists than the cap within the window): drop the oldest.
  local flat = redis.call('HGETALL', KEYS[1])
  local served = {}
  for i = 1, #flat, 2 do
    local ok, record = pcall(cjson.decode, flat[i + 1])
    served[#served + 1] = {flat[i], ok and tonumber(record.served_at) or 0}
  end
  table.sort(served, function(a, b) return a[2] < b[2] end)
  for i = 1, size - cap do redis.call('HDEL', KEYS[1], served[i][1]) end
end
return size
