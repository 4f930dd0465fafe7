"""The item catalogue and user erasure: the feature-store's writes outside the stream.

Each item write is one Lua script, so the item hash, its category sets, the unavailable set, the
popularity sets and the catalogue version move together: an item made unavailable is out of every
popular list and marked for the recommenders' filters in the same instant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis.asyncio as aioredis

from recsys_shared import keys
from recsys_shared.schemas import ItemWithId

# KEYS: none (per-item keys are built from prefixes). ARGV: item prefix, items set, unavailable
# set, category prefix, popular key, popular category prefix, catalogue version key, then the
# item: id, title, categories JSON, available flag ('1'/'0'), updated_at; or, to delete, an
# empty title.
_WRITE_ITEM = """
local item_prefix, items_key, unavailable_key, category_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local popular_key, popular_category_prefix, version_key = ARGV[5], ARGV[6], ARGV[7]
local item, title, categories_json = ARGV[8], ARGV[9], ARGV[10]
local available, updated_at = ARGV[11], ARGV[12]
local item_key = item_prefix .. item
local old_json = redis.call('HGET', item_key, 'categories')
if title == '' and not old_json then return 0 end  -- deleting what is not there changes nothing
local old = {}
if old_json then old = cjson.decode(old_json) end
local new = {}
if title ~= '' then new = cjson.decode(categories_json) end
local score = redis.call('ZSCORE', popular_key, item)
local keep = {}
for _, category in ipairs(new) do keep[category] = true end
for _, category in ipairs(old) do
  if not keep[category] then
    redis.call('SREM', category_prefix .. category, item)
    redis.call('ZREM', popular_category_prefix .. category, item)
  end
end
for _, category in ipairs(new) do
  redis.call('SADD', category_prefix .. category, item)
  if score and available == '1' then
    redis.call('ZADD', popular_category_prefix .. category, score, item)
  end
end
if title == '' then
  redis.call('DEL', item_key)
  redis.call('SREM', items_key, item)
else
  redis.call('HSET', item_key, 'title', title, 'categories', categories_json,
             'available', available, 'updated_at', updated_at)
  redis.call('SADD', items_key, item)
end
if available == '1' then
  redis.call('SREM', unavailable_key, item)
else
  redis.call('SADD', unavailable_key, item)
  redis.call('ZREM', popular_key, item)
  for _, category in ipairs(new) do
    redis.call('ZREM', popular_category_prefix .. category, item)
  end
end
redis.call('INCR', version_key)
return old_json and 1 or 0
"""

_ITEM_SCRIPT_PREFIXES = (
    keys.ITEM_PREFIX,
    keys.ITEMS,
    keys.UNAVAILABLE_ITEMS,
    keys.CATEGORY_PREFIX,
    keys.POPULAR,
    keys.POPULAR_CATEGORY_PREFIX,
    keys.CATALOGUE_VERSION,
)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Catalogue:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._write = client.register_script(_WRITE_ITEM)

    async def upsert(self, items: list[ItemWithId]) -> None:
        """Store items in one round trip; each item's write is atomic on its own."""
        updated_at = _now()
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in items:
                args = (
                    *_ITEM_SCRIPT_PREFIXES,
                    entry.item_id,
                    entry.title,
                    # Sorted and unique, so equal catalogues store equal bytes.
                    json.dumps(sorted(set(entry.categories))),
                    "1" if entry.available else "0",
                    updated_at,
                )
                await self._write(keys=[], args=args, client=pipe)
            await pipe.execute()

    async def delete(self, item_id: str) -> bool:
        """Remove an item; it stays in the unavailable set so it is never recommended again."""
        existed = await self._write(
            keys=[], args=(*_ITEM_SCRIPT_PREFIXES, item_id, "", "[]", "0", _now())
        )
        return bool(existed)

    async def erase_user(self, user_id: str) -> bool:
        """Erase a user's history and features; later snapshots no longer contain them."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.user_items(user_id), keys.user_times(user_id), keys.user_meta(user_id))
            pipe.srem(keys.USERS, user_id)
            deleted, removed = await pipe.execute()
        if not (deleted or removed):
            return False
        # A new data generation: the next snapshot differs even without new events, so the
        # next training (and its model) leaves the user out.
        await self.redis.hincrby(keys.PIPELINE_STATS, "erasures", 1)
        return True
