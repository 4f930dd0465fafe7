#!lua
-- Refused whole at maxmemory, never half a switch.
-- Make a model version the active one: status changes, the pointer move and the notification
-- happen together or not at all (recsys_shared.registry).
-- KEYS: the active pointer, the version's hash (one slot: the registry's).
-- ARGV: version, now, reason, model key prefix, channel, then the hash field names:
--       info, artifact, status, status_reason, activated_at, replaced_by; then 1 to activate
--       a version the gate rejected (an experiment promoted it), else 0.
-- Returns the previously active version (or false); errors UNKNOWN, NOARTIFACT, REJECTED.
local version, now, reason, model_prefix, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local f_info, f_artifact, f_status, f_reason = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local f_activated, f_replaced_by, rejected_too = ARGV[10], ARGV[11], ARGV[12]
if not redis.call('HGET', KEYS[2], f_info) then return redis.error_reply('UNKNOWN') end
if not redis.call('HGET', KEYS[2], f_artifact) then return redis.error_reply('NOARTIFACT') end
if rejected_too ~= '1' and redis.call('HGET', KEYS[2], f_status) == 'rejected' then
  return redis.error_reply('REJECTED')
end
local previous = redis.call('GET', KEYS[1])
if previous and previous ~= version then
  redis.call('HSET', model_prefix .. previous, f_status, 'retired',
             f_reason, 'replaced by version ' .. version, f_replaced_by, version)
end
redis.call('HSET', KEYS[2], f_status, 'active', f_reason, reason, f_activated, now)
redis.call('HDEL', KEYS[2], f_replaced_by)
redis.call('SET', KEYS[1], version)
redis.call('PUBLISH', channel, version)
return previous
