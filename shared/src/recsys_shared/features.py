"""Read-only access to the features the feature-store owns (the online-store pattern).

The recommender and the gateway read user histories, popularity and the catalogue through this
class; only the feature-store writes them. Every method is one round trip (on a cluster, one per
node it needs: a user's state lives on their partition's slot, the catalogue on its own).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict, Unpack

from recsys_shared import keys
from recsys_shared.redis import LuaScript, RedisClient
from recsys_shared.schemas import Item

#: json.dumps of one string, without its Python-level encoder around it (the same C function):
#: for JSON written by hand on the read path (item details here, lists in ``responses``).
json_string = json.encoder.encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class UserContext:
    """What serving one user needs, read in one round trip.

    ``weights`` maps every item the user interacted with to its weight; ``epoch`` changes with
    every applied event of the user; ``updated_at`` is when the last one was applied;
    ``catalogue_version`` tells whether cached availability filters are still current.
    """

    weights: dict[str, float] = field(default_factory=dict)
    epoch: str | None = None
    updated_at: float = 0.0
    catalogue_version: int = 0

    @property
    def seen(self) -> Collection[str]:
        return self.weights.keys()


class PopularPage(TypedDict, total=False):
    """Which popular items to read (the arguments of :meth:`FeatureReader.popular`): the top
    ``k`` after ``offset`` (default 0) of ``category`` (default None: all items), skipping
    ``exclude`` (default none)."""

    k: Required[int]
    offset: int
    category: str | None
    exclude: Collection[str]


@dataclass(frozen=True, slots=True)
class ItemDetails:
    """What a list shows of an item. ``categories_json`` is the JSON list as the feature-store
    stored it (``json.dumps`` of the validated categories), spliced into responses as it is.
    ``json_tail`` ends the item's JSON in a list (``,"title":…,"categories":[…]}``): written
    once, where the details are read, not for every list that shows the item."""

    title: str
    categories_json: str
    json_tail: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tail = f',"title":{json_string(self.title)},"categories":{self.categories_json}}}'
        object.__setattr__(self, "json_tail", tail)


def parse_categories(raw: str | None) -> list[str]:
    if not raw:
        return []
    parsed = json.loads(raw)
    return [str(category) for category in parsed] if isinstance(parsed, list) else []


#: One command for a whole list's titles (``lua/item_details.lua``): a batch of one HMGET per
#: item costs the client a command and a parsed reply each.
ITEM_DETAILS = LuaScript.load(__package__, "lua/item_details.lua")


class FeatureReader:
    def __init__(self, client: RedisClient, partitions: keys.Partitions) -> None:
        self.redis = client
        self.partitions = partitions

    async def user_context(self, user_id: str) -> UserContext:
        (context,) = await self.user_contexts((user_id,))
        return context

    async def user_contexts(self, user_ids: Sequence[str]) -> list[UserContext]:
        """Several users' contexts in one round trip (a recommender's batch)."""
        commands: list[tuple[str, ...]] = [("GET", keys.CATALOGUE_VERSION)]
        for user_id in user_ids:
            partition = self.partitions.of(user_id)
            commands.append(("HGETALL", partition.user_items(user_id)))
            commands.append(
                ("HMGET", partition.user_meta(user_id), keys.META_EPOCH, keys.META_UPDATED_AT)
            )
        raw_version, *replies = await self.redis.execute_many(commands)
        catalogue_version = int(raw_version or 0)
        return [
            UserContext(
                weights={item: float(weight) for item, weight in raw_weights.items()},
                epoch=epoch,
                updated_at=float(updated_at or 0.0),
                catalogue_version=catalogue_version,
            )
            for raw_weights, (epoch, updated_at) in zip(replies[::2], replies[1::2], strict=True)
        ]

    async def popular(self, **page: Unpack[PopularPage]) -> list[tuple[str, float]]:
        """Top time-decayed popular items, skipping ``exclude``, then paged by ``offset``.

        Scores are relative to the most popular item (1.0): the stored values carry the decay
        factor of their time and mean nothing on their own. The feature-store keeps unavailable
        items out of these sets, so no filter is needed for them here.
        """
        popular_read = _PopularRead.of(page)
        return popular_read.page(await self.redis.execute(*popular_read.command()))

    async def popular_and_catalogue_version(
        self, **page: Unpack[PopularPage]
    ) -> tuple[list[tuple[str, float]], int]:
        """:meth:`popular` and the catalogue version in one round trip: with the version, the
        items' details can come from an ``ItemDetailsCache`` instead of another read."""
        popular_read = _PopularRead.of(page)
        ranked, version = await self.redis.execute_many(
            [popular_read.command(), ("GET", keys.CATALOGUE_VERSION)]
        )
        return popular_read.page(ranked), int(version or 0)

    async def item_details(self, item_ids: Sequence[str]) -> list[ItemDetails | None]:
        """Details of each item, in order; None for an item not in the catalogue."""
        if not item_ids:
            return []
        rows = await self.redis.run(
            ITEM_DETAILS,
            keys=[keys.ITEMS],  # names the catalogue's slot
            args=[keys.ITEM_PREFIX, keys.ITEM_TITLE, keys.ITEM_CATEGORIES, *item_ids],
        )
        return [
            ItemDetails(title, categories or "[]") if title is not None else None
            for title, categories in rows
        ]

    async def item(self, item_id: str) -> Item | None:
        raw: dict[str, str] = await self.redis.execute("HGETALL", keys.item(item_id))
        if not raw:
            return None
        return Item(
            item_id=item_id,
            title=raw[keys.ITEM_TITLE],
            categories=parse_categories(raw.get(keys.ITEM_CATEGORIES)),
            available=raw.get(keys.ITEM_AVAILABLE) == "1",
            updated_at=raw[keys.ITEM_UPDATED_AT],
        )

    async def catalogue_version(self) -> int:
        return int(await self.redis.execute("GET", keys.CATALOGUE_VERSION) or 0)

    async def unavailable_items(self) -> set[str]:
        return set(await self.redis.execute("SMEMBERS", keys.UNAVAILABLE_ITEMS))

    async def category_items(self, category: str) -> set[str]:
        return set(await self.redis.execute("SMEMBERS", keys.category_items(category)))


@dataclass(frozen=True, slots=True)
class _PopularRead:
    """A :class:`PopularPage` with its defaults filled in, and how to read it."""

    k: int
    offset: int
    category: str | None
    exclude: Collection[str]

    @classmethod
    def of(cls, page: PopularPage) -> _PopularRead:
        return cls(page["k"], page.get("offset", 0), page.get("category"), page.get("exclude", ()))

    def command(self) -> tuple[str, str, int, int, str]:
        """The command reading enough of a popular set to page past ``exclude``."""
        source = keys.popular_in(self.category) if self.category else keys.POPULAR
        return ("ZREVRANGE", source, 0, self.offset + self.k + len(self.exclude) - 1, "WITHSCORES")

    def page(self, reply: list[list[Any]]) -> list[tuple[str, float]]:
        ranked = [(str(item), float(score)) for item, score in reply]
        top = ranked[0][1] if ranked and ranked[0][1] > 0 else 1.0
        kept = [(item, score / top) for item, score in ranked if item not in self.exclude]
        return kept[self.offset : self.offset + self.k]
