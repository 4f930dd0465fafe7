"""Turning a request into a ranked, filtered, attributed list of items."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from recommender import metrics
from recommender.model_store import Indexes, LoadedModel, ModelHolder
from recommender.ranking import RankingOptions, ranked_page, similar_scores, user_scores
from recsys_shared.errors import UnknownItem
from recsys_shared.features import FeatureReader, UserContext
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.redis import RedisClient
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import RecommendationQuery, Strategy

_NO_ROWS: Indexes = np.empty(0, dtype=np.int64)
#: What a user's ranking leaves out, and the rows it is restricted to (a category), if any.
_Filters = tuple[Indexes, Indexes | None]
#: A user's ranked page, the strategy that ranked it, and the items in exploration slots.
_Page = tuple[list[tuple[str, float]], Strategy, frozenset[str]]


class CatalogueFilter:
    """Model rows that must not be recommended (deleted, unavailable) and rows per category.

    Cached per (catalogue version, model version): one Redis read after each catalogue change,
    none otherwise, so availability changes apply to the very next request.
    """

    def __init__(self, reader: FeatureReader) -> None:
        self.reader = reader
        self._stamp: tuple[int, int] | None = None
        self._unavailable: Indexes = _NO_ROWS
        self._categories: dict[str, Indexes] = {}

    async def _sync(self, model: LoadedModel, catalogue_version: int) -> None:
        stamp = (catalogue_version, model.version)
        if stamp == self._stamp:
            return
        unavailable = await self.reader.unavailable_items()
        rows, _ = model.items.lookup(sorted(unavailable))
        self._unavailable, self._categories, self._stamp = rows, {}, stamp

    async def unavailable(self, model: LoadedModel, catalogue_version: int) -> Indexes:
        await self._sync(model, catalogue_version)
        return self._unavailable

    async def category(self, model: LoadedModel, catalogue_version: int, category: str) -> Indexes:
        await self._sync(model, catalogue_version)
        rows = self._categories.get(category)
        if rows is None:
            members = await self.reader.category_items(category)
            rows, _ = model.items.lookup(sorted(members))
            self._categories[category] = rows = np.sort(rows)
        return rows


class RecommendationService:
    def __init__(
        self,
        reader: FeatureReader,
        holder: ModelHolder,
        *,
        records: RedisClient,
        record_ttl_seconds: int,
        memory_guard: MemoryGuard | None = None,
        ranking: RankingOptions | None = None,
    ) -> None:
        self.reader = reader
        self.ranking = ranking or RankingOptions()
        self.responses = ResponseBuilder(
            reader, records, record_ttl_seconds=record_ttl_seconds, memory_guard=memory_guard
        )
        self.holder = holder
        self.catalogue = CatalogueFilter(self.reader)

    async def for_user(self, user_id: str, query: RecommendationQuery) -> str:
        """The user's list as the JSON of a ``Recommendations``."""
        (listed,) = await self.for_users(((user_id, query),))
        return listed

    async def for_users(self, requests: Sequence[tuple[str, RecommendationQuery]]) -> list[str]:
        """Each user's list as the JSON of a ``Recommendations``, in the order asked.

        One round trip reads every user's context and one model version scores every user it
        can personalise for; the others get popular items, each marked with the reason.
        """
        contexts = await self.reader.user_contexts([user_id for user_id, _ in requests])
        model = self.holder.current
        ranked: list[_Page | None] = [None] * len(requests)
        if model is not None:
            started = time.perf_counter()
            ranked = await self._personalised(model, requests, contexts)
            if any(page is not None for page in ranked):
                metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
        lists: list[str] = [""] * len(requests)
        fallbacks: list[int] = []
        for index, page in enumerate(ranked):
            if model is None or page is None:
                fallbacks.append(index)
                continue
            items, strategy, explored = page
            lists[index] = await self._respond(
                items,
                strategy,
                None,
                model.version,
                user_id=requests[index][0],
                catalogue_version=contexts[index].catalogue_version,
                explored=explored,
            )
        if fallbacks:
            # Each fallback reads the popular set: concurrently, so a batch of new users costs
            # one round trip, not one each.
            popular = await asyncio.gather(
                *(
                    self._popular_for(model, *requests[index], contexts[index])
                    for index in fallbacks
                )
            )
            for index, listed in zip(fallbacks, popular, strict=True):
                lists[index] = listed
        return lists

    async def _popular_for(
        self,
        model: LoadedModel | None,
        user_id: str,
        query: RecommendationQuery,
        context: UserContext,
    ) -> str:
        if model is None:
            reason = "no_model"
        else:
            reason = "unknown_user" if not context.weights else "no_known_items"
        exclude = context.seen if query.exclude_seen else ()
        popular = await self.reader.popular(
            k=query.k, offset=query.offset, category=query.category, exclude=exclude
        )
        return await self._respond(
            popular,
            Strategy.POPULAR,
            reason,
            None,
            user_id=user_id,
            catalogue_version=context.catalogue_version,
        )

    async def _personalised(
        self,
        model: LoadedModel,
        requests: Sequence[tuple[str, RecommendationQuery]],
        contexts: Sequence[UserContext],
    ) -> list[_Page | None]:
        """The ranked page of every user the model can score; None for the others."""
        ranked: list[_Page | None] = [None] * len(requests)
        for index, ((user_id, query), context) in enumerate(zip(requests, contexts, strict=True)):
            if context.epoch is None:
                # The feature-store holds nothing of the user (erased, or forgotten after
                # the retention period): never personalised from a model that may predate it.
                continue
            seen_rows, known = model.items.lookup(list(context.weights))
            weights = np.fromiter(context.weights.values(), dtype=np.float32, count=len(known))
            row = model.users.get(user_id)
            fresh = row is None or context.updated_at > model.trained_through
            # One product per user, not one for the batch: a matrix product may round
            # differently, and a list must not depend on what shared its batch (pages of one
            # user computed apart must agree on one order).
            scores = user_scores(model, row, fresh, seen_rows, weights[known])
            if scores is None:
                continue
            if fresh and scores.strategy is Strategy.PERSONALIZED:
                metrics.FOLD_INS.inc()
            exclude, candidates = await self._filters(model, query, context, seen_rows)
            rows, values, explored = ranked_page(
                model,
                scores,
                k=query.k,
                offset=query.offset,
                exclude=exclude,
                candidates=candidates,
                options=self.ranking,
                share=self.ranking.exploration_share,
            )
            ranked[index] = (
                model.named(rows, values),
                scores.strategy,
                frozenset(model.items.name(row) for row in explored),
            )
        return ranked

    async def _filters(
        self,
        model: LoadedModel,
        query: RecommendationQuery,
        context: UserContext,
        seen_rows: Indexes,
    ) -> _Filters:
        """Rows to leave out (unavailable, and seen if asked) and the category's rows, if any."""
        exclude = await self.catalogue.unavailable(model, context.catalogue_version)
        if query.exclude_seen and len(seen_rows):
            exclude = np.concatenate((exclude, seen_rows)) if len(exclude) else seen_rows
        candidates = None
        if query.category:
            candidates = await self.catalogue.category(
                model, context.catalogue_version, query.category
            )
        return exclude, candidates

    async def similar(self, item_id: str, query: RecommendationQuery) -> str:
        """Items like ``item_id``, as the JSON of a ``Recommendations``."""
        model = self.holder.current
        row = model.items.get(item_id) if model is not None else None
        if model is None or row is None:
            details = await self.reader.item(item_id)
            if details is None:
                raise UnknownItem(f"Item '{item_id}' is neither in the catalogue nor in the model.")
            # A catalogued item the model has not learned yet: popular items of its kind.
            category = query.category or (details.categories[0] if details.categories else None)
            popular = await self.reader.popular(
                k=query.k, offset=query.offset, category=category, exclude=(item_id,)
            )
            reason = "no_model" if model is None else "item_not_in_model"
            return await self._respond(popular, Strategy.POPULAR, reason, None, item_id=item_id)
        scores = similar_scores(model, row)
        if scores is None:  # outside an item-item model's items, and no content to go by
            popular = await self.reader.popular(
                k=query.k, offset=query.offset, category=query.category, exclude=(item_id,)
            )
            return await self._respond(
                popular, Strategy.POPULAR, "item_not_in_model", None, item_id=item_id
            )
        catalogue_version = await self.reader.catalogue_version()
        unavailable = await self.catalogue.unavailable(model, catalogue_version)
        candidates = None
        if query.category:
            candidates = await self.catalogue.category(model, catalogue_version, query.category)
        rows, values, explored = ranked_page(
            model,
            scores,
            k=query.k,
            offset=query.offset,
            exclude=np.append(unavailable, row),
            candidates=candidates,
            options=self.ranking,
            share=self.ranking.similar_exploration_share,
        )
        return await self._respond(
            model.named(rows, values),
            scores.strategy,
            None,
            model.version,
            item_id=item_id,
            catalogue_version=catalogue_version,
            explored=frozenset(model.items.name(row) for row in explored),
        )

    async def _respond(
        self,
        ranked: list[tuple[str, float]],
        strategy: Strategy,
        reason: str | None,
        version: int | None,
        *,
        user_id: str | None = None,
        item_id: str | None = None,
        catalogue_version: int | None = None,
        explored: frozenset[str] = frozenset(),
    ) -> str:
        endpoint = "user" if user_id is not None else "item"
        metrics.responses(endpoint, strategy.value, reason or "").inc()
        return await self.responses.build(
            ranked,
            strategy,
            reason=reason,
            version=version,
            user_id=user_id,
            item_id=item_id,
            catalogue_version=catalogue_version,
            explored=explored,
        )
