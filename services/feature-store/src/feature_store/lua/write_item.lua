#!lua
-- Refused whole at maxmemory: the client gets a 503 and retries.
-- Store, change or delete one item (feature_store.catalogue). The item hash, its category
-- sets, availability, the merged popular sets and the catalogue version move together: an
-- item made unavailable is out of every popular list in the same instant, and counted in
-- `removals`, announced on `channel`: the gateways stamp cached lists with that count, so
-- no cached list holding the item is served once they hear of it.
-- KEYS[1]: the catalogue's item set (every key below shares the {catalogue} hash tag).
-- ARGV[1]: the layout, JSON {item_prefix, items, unavailable, deleted, category_prefix,
--          popular, popular_category_prefix, popular_dirty, version, removals, channel,
--          title_field, categories_field, available_field, updated_at_field, now}
-- ARGV[2..7]: item id, mode ('put', 'patch' or 'delete'), title, categories JSON, available
--          ('1'/'0'), updated_at. A patch keeps each field given as ''.
-- Returns 1 if the item existed before, else 0 (a patch of a missing item changes nothing).
local L = cjson.decode(ARGV[1])
local item, mode, title, categories_json = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local available, updated_at = ARGV[6], ARGV[7]
local item_key = L.item_prefix .. item
local current = redis.call('HMGET', item_key, L.title_field, L.categories_field, L.available_field)
local old_json = current[2]
-- An item stored before availability was a field has none: it was recommendable.
local was_recommendable = old_json and current[3] ~= '0'
if mode ~= 'put' and not old_json then return 0 end  -- nothing there to delete or patch
if mode == 'patch' then
  if title == '' then title = current[1] end
  if categories_json == '' then categories_json = old_json end
  if available == '' then available = current[3] end
end
local old = old_json and cjson.decode(old_json) or {}
local new = (mode ~= 'delete') and cjson.decode(categories_json) or {}
if mode == 'delete' then available = '0' end
local score = redis.call('ZSCORE', L.popular, item)
local keep = {}
for _, category in ipairs(new) do keep[category] = true end
for _, category in ipairs(old) do
  if not keep[category] then
    redis.call('SREM', L.category_prefix .. category, item)
    redis.call('ZREM', L.popular_category_prefix .. category, item)
  end
end
for _, category in ipairs(new) do
  redis.call('SADD', L.category_prefix .. category, item)
  if score and available == '1' then
    redis.call('ZADD', L.popular_category_prefix .. category, score, item)
  end
end
if mode == 'delete' then
  redis.call('DEL', item_key)
  redis.call('SREM', L.items, item)
  redis.call('ZADD', L.deleted, L.now, item)
else
  redis.call('HSET', item_key, L.title_field, title, L.categories_field, categories_json,
             L.available_field, available, L.updated_at_field, updated_at)
  redis.call('SADD', L.items, item)
  redis.call('ZREM', L.deleted, item)
end
if available == '1' then
  if redis.call('SREM', L.unavailable, item) == 1 then
    -- Available again: the merger puts its summed popularity back.
    redis.call('SADD', L.popular_dirty, item)
  end
else
  redis.call('SADD', L.unavailable, item)
  redis.call('ZREM', L.popular, item)
  for _, category in ipairs(new) do
    redis.call('ZREM', L.popular_category_prefix .. category, item)
  end
end
redis.call('INCR', L.version)
if was_recommendable and available ~= '1' then
  redis.call('PUBLISH', L.channel, 'removal ' .. redis.call('INCR', L.removals))
end
return old_json and 1 or 0
