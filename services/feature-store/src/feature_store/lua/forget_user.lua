#!lua flags=allow-oom
-- Runs at maxmemory too: forgetting frees memory.
-- Remove every trace of users from one partition (feature_store.erasure): their features,
-- markers, membership, drift counts and dead letters; for an erasure, also a tombstone that
-- drops the events they sent before it (a digest of the id, never the id).
-- KEYS[1]: the partition's users set (every key below shares its hash tag).
-- ARGV[1]: the layout, JSON {user_prefix, suffixes: [...], erased, dead, drift_users: [...],
--          entry_field, cutoff}; cutoff > 0 forgets a user only if still silent since
--          then (retention), 0 forgets unconditionally (erasure).
-- ARGV[2..]: pairs (user id, digest for the tombstone or '' for none).
-- Returns how many of them had features, markers or membership to forget (an erasure of a
-- user the partition never knew changes no snapshot, so it starts no new data generation).
local L = cjson.decode(ARGV[1])
-- A tombstone is stamped by this Redis's clock, the one that names the partition's stream
-- entries, so an entry's id says whether it entered before the erasure whatever the clocks of
-- the hosts that stamped and applied it (apply.lua, dead_letter.lua).
local clock = redis.call('TIME')
local erased_at = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local forgotten = 0
local removed, any_removed = {}, false
for i = 2, #ARGV, 2 do
  local user, digest = ARGV[i], ARGV[i + 1]
  local last = redis.call('ZSCORE', KEYS[1], user)
  if L.cutoff == 0 or (last and tonumber(last) < L.cutoff) then
    local deleted = 0
    for _, suffix in ipairs(L.suffixes) do
      deleted = deleted + redis.call('DEL', L.user_prefix .. user .. suffix)
    end
    redis.call('ZREM', KEYS[1], user)
    for _, bucket in ipairs(L.drift_users) do redis.call('HDEL', bucket, user) end
    if digest ~= '' then redis.call('HSET', L.erased, digest, erased_at) end
    removed[user], any_removed = true, true
    if last or deleted > 0 then forgotten = forgotten + 1 end
  end
end
-- Dead letters naming a removed user (even one with nothing else left): their event JSON
-- carries "user_id".
if any_removed then
  local letters = redis.call('XRANGE', L.dead, '-', '+')
  for _, letter in ipairs(letters) do
    local fields = letter[2]
    for j = 1, #fields, 2 do
      if fields[j] == L.entry_field then
        local ok, event = pcall(cjson.decode, fields[j + 1])
        local owner = ok and type(event) == 'table' and event.user_id
        if owner and removed[owner] then redis.call('XDEL', L.dead, letter[1]) end
        if not ok then
          for user, _ in pairs(removed) do
            if string.find(fields[j + 1], user, 1, true) then
              redis.call('XDEL', L.dead, letter[1])
              break
            end
          end
        end
      end
    end
  end
end
return forgotten
