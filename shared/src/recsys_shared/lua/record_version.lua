#!lua
-- Refused whole at maxmemory, never half a record.
-- Record a model version (recsys_shared.registry): its hash fields, its place in the versions
-- set and its snapshot's pointer, together. A training passes its lock's token: the record is
-- refused (LOCKLOST) unless the training lock is still that holder's, so a training whose lock
-- expired before its renewer noticed writes nothing (a fencing check in the registry's slot).
-- KEYS: the version's hash, the versions set, the snapshot's pointer, the training lock.
-- ARGV: the holder's token ('' records without the check), the version, then field/value pairs.
if ARGV[1] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[2])
return 1
