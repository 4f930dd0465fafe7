"""Turning a request into a ranked, filtered, attributed list of items."""

from __future__ import annotations

import time

import numpy as np

from recommender import metrics
from recommender.model_store import Floats, Indexes, LoadedModel, ModelHolder
from recommender.scoring import top_k
from recsys_shared.errors import UnknownItem
from recsys_shared.features import FeatureReader, UserContext
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.multiplexed import MultiplexedRedis
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import RecommendationQuery, Strategy

_NO_ROWS: Indexes = np.empty(0, dtype=np.int64)


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
        client: MultiplexedRedis,
        holder: ModelHolder,
        *,
        record_ttl_seconds: int,
        memory_guard: MemoryGuard | None = None,
    ) -> None:
        self.reader = FeatureReader(client)
        self.responses = ResponseBuilder(
            client, record_ttl_seconds=record_ttl_seconds, memory_guard=memory_guard
        )
        self.holder = holder
        self.catalogue = CatalogueFilter(self.reader)

    async def for_user(self, user_id: str, query: RecommendationQuery) -> str:
        """The user's list as the JSON of a ``Recommendations``."""
        context = await self.reader.user_context(user_id)
        model = self.holder.current
        reason = "no_model"
        if model is not None:
            started = time.perf_counter()
            ranked = await self._personalised(model, user_id, context, query)
            if ranked is not None:
                metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
                return await self._respond(
                    ranked,
                    Strategy.PERSONALIZED,
                    None,
                    model.version,
                    user_id=user_id,
                    catalogue_version=context.catalogue_version,
                )
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
        self, model: LoadedModel, user_id: str, context: UserContext, query: RecommendationQuery
    ) -> list[tuple[str, float]] | None:
        item_ids = list(context.weights)
        seen_rows, known = model.items.lookup(item_ids)
        vector = self._user_vector(model, user_id, context, seen_rows, known)
        if vector is None:
            return None
        unavailable = await self.catalogue.unavailable(model, context.catalogue_version)
        exclude = unavailable
        if query.exclude_seen and len(seen_rows):
            exclude = np.concatenate((unavailable, seen_rows)) if len(unavailable) else seen_rows
        candidates = None
        if query.category:
            candidates = await self.catalogue.category(
                model, context.catalogue_version, query.category
            )
        rows, scores = top_k(
            model.item_factors @ vector,
            k=query.k,
            offset=query.offset,
            exclude=exclude,
            candidates=candidates,
        )
        return model.named(rows, scores)

    def _user_vector(
        self,
        model: LoadedModel,
        user_id: str,
        context: UserContext,
        seen_rows: Indexes,
        known: np.ndarray,
    ) -> Floats | None:
        """The trained vector if the model saw all of the user's events, else a fold-in."""
        row = model.users.get(user_id)
        if row is not None and context.updated_at <= model.trained_through:
            vector: Floats = model.user_factors[row]
            return vector
        weights = np.fromiter(context.weights.values(), dtype=np.float32, count=len(known))[known]
        positive = weights > 0
        if not positive.any():
            return model.user_factors[row] if row is not None else None
        metrics.FOLD_INS.inc()
        return model.fold_in(seen_rows[positive], weights[positive])

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
        catalogue_version = await self.reader.catalogue_version()
        unavailable = await self.catalogue.unavailable(model, catalogue_version)
        candidates = None
        if query.category:
            candidates = await self.catalogue.category(model, catalogue_version, query.category)
        unit = model.unit_item_factors
        rows, scores = top_k(
            unit @ unit[row],
            k=query.k,
            offset=query.offset,
            exclude=np.append(unavailable, row),
            candidates=candidates,
        )
        return await self._respond(
            model.named(rows, scores),
            Strategy.SIMILAR,
            None,
            model.version,
            item_id=item_id,
            catalogue_version=catalogue_version,
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
        )
