"""The item catalogue: the feature-store's writes outside the stream.

Each item write is one Lua script (``lua/write_item.lua``) on the catalogue's slot, so the
item hash, its category sets, the unavailable set, the merged popularity sets and the
catalogue version move together: an item made unavailable is out of every popular list and
marked for the recommenders' filters in the same instant. A deleted item stays unavailable
(never recommended by a model trained before) and out of every snapshot for
``DELETED_ITEM_RETENTION_DAYS`` and as long as a model that knows it can be activated, then
every trace of it goes, users' histories first (``feature_store.housekeeping``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from recsys_shared import keys
from recsys_shared.redis import Arg, LuaScript, RedisClient
from recsys_shared.schemas import ItemPatch, ItemWithId

WRITE_ITEM = LuaScript.load(__package__, "lua/write_item.lua")

Mode = Literal["put", "patch", "delete"]


def _layout() -> str:
    return json.dumps(
        {
            "item_prefix": keys.ITEM_PREFIX,
            "items": keys.ITEMS,
            "unavailable": keys.UNAVAILABLE_ITEMS,
            "deleted": keys.DELETED_ITEMS,
            "category_prefix": keys.CATEGORY_PREFIX,
            "popular": keys.POPULAR,
            "popular_category_prefix": keys.POPULAR_CATEGORY_PREFIX,
            "popular_dirty": keys.POPULAR_DIRTY,
            "version": keys.CATALOGUE_VERSION,
            "removals": keys.CATALOGUE_REMOVALS,
            "channel": keys.MODEL_EVENTS_CHANNEL,
            "title_field": keys.ITEM_TITLE,
            "categories_field": keys.ITEM_CATEGORIES,
            "available_field": keys.ITEM_AVAILABLE,
            "updated_at_field": keys.ITEM_UPDATED_AT,
            "now": time.time(),
        }
    )


def _categories_json(categories: Sequence[str]) -> str:
    # Sorted and unique, so equal catalogues store equal bytes.
    return json.dumps(sorted(set(categories)))


def _flag(available: bool | None) -> str:
    return "" if available is None else "1" if available else "0"


#: Item writes sent together by an upsert.
UPSERT_CHUNK = 200


class Catalogue:
    def __init__(self, client: RedisClient) -> None:
        self.redis = client

    async def _write(
        self,
        layout: str,
        item_id: str,
        mode: Mode,
        *,
        title: str = "",
        categories: str = "",
        available: str = "",
    ) -> bool:
        args: list[Arg] = [
            layout,
            item_id,
            mode,
            title,
            categories,
            available,
            datetime.now(UTC).isoformat(),
        ]
        existed = await self.redis.run(WRITE_ITEM, keys=[keys.ITEMS], args=args)
        return bool(existed)

    async def upsert(self, items: Sequence[ItemWithId]) -> None:
        """Store items; each item's write is atomic on its own. The writes of a chunk are
        sent together (the client pipelines them on its connection): a catalogue of a
        thousand items is a few round trips, not a thousand."""
        layout = _layout()
        for start in range(0, len(items), UPSERT_CHUNK):
            await asyncio.gather(
                *(
                    self._write(
                        layout,
                        entry.item_id,
                        "put",
                        title=entry.title,
                        categories=_categories_json(entry.categories),
                        available=_flag(entry.available),
                    )
                    for entry in items[start : start + UPSERT_CHUNK]
                )
            )

    async def patch(self, item_id: str, patch: ItemPatch) -> bool:
        """Change the given fields of an item; False when there is no such item."""
        return await self._write(
            _layout(),
            item_id,
            "patch",
            title=patch.title or "",
            categories=_categories_json(patch.categories) if patch.categories is not None else "",
            available=_flag(patch.available),
        )

    async def delete(self, item_id: str) -> bool:
        """Remove an item; it stays unavailable so that no model recommends it again. The data
        generation moves on, so the next snapshot is a new one, which leaves it out."""
        deleted = await self._write(_layout(), item_id, "delete")
        if deleted:
            await self.redis.execute("INCR", keys.DATA_GENERATION)
        return deleted
