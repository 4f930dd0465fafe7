#!lua
-- Refused whole at maxmemory; the next merge does it.
-- Write items' summed popularity into the merged sets serving reads (feature_store.merger).
-- KEYS[1]: the merged popular set (every key below shares the {catalogue} hash tag).
-- ARGV[1]: the layout, JSON {unavailable, item_prefix, categories_field,
--          popular_category_prefix}; ARGV[2..]: pairs (item, summed score).
-- An unavailable item, or one with nothing left, is taken out instead.
local L = cjson.decode(ARGV[1])
for i = 2, #ARGV, 2 do
  local item, score = ARGV[i], tonumber(ARGV[i + 1])
  local categories = redis.call('HGET', L.item_prefix .. item, L.categories_field)
  local listed = categories and cjson.decode(categories) or {}
  if score > 0 and redis.call('SISMEMBER', L.unavailable, item) == 0 then
    redis.call('ZADD', KEYS[1], score, item)
    for _, category in ipairs(listed) do
      redis.call('ZADD', L.popular_category_prefix .. category, score, item)
    end
  else
    redis.call('ZREM', KEYS[1], item)
    for _, category in ipairs(listed) do
      redis.call('ZREM', L.popular_category_prefix .. category, item)
    end
  end
end
return (#ARGV - 1) / 2
