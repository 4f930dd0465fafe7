#!lua flags=no-writes
-- Reads only: runs at maxmemory and on replicas.
-- Titles and categories of many items in one command (recsys_shared.features).
-- KEYS: the catalogue's item set (it only names the catalogue's slot).
-- ARGV: the item key prefix, the title field, the categories field, then item ids.
-- Returns one {title, categories} row per item (false for a field an item lacks).
local prefix, title, categories = ARGV[1], ARGV[2], ARGV[3]
local rows = {}
for i = 4, #ARGV do
  rows[i - 3] = redis.call('HMGET', prefix .. ARGV[i], title, categories)
end
return rows
