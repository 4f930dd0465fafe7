"""Read path of the gateway: the response cache, then a recommender (users' lists in batches,
see ``gateway.batching``); if none answers, popular items from Redis.

While an experiment runs, a user's list is their variant's (``gateway.experiments``): cached
under the variant, ranked by the version it pins, and counted as an exposure when served.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from gateway import metrics
from gateway.batching import UserListBatcher
from gateway.cache import Lookup, ResponseCache, cached_json
from gateway.clients import RecommenderClient, query_string, segment
from gateway.experiments import ExperimentRuntime
from recsys_shared.errors import UpstreamUnavailable
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import ExperimentArm, FallbackReason, RecommendationQuery, Strategy

log = logging.getLogger(__name__)

FALLBACK_REASON = FallbackReason.RECOMMENDER_UNAVAILABLE


class ReadService:
    def __init__(
        self,
        responses: ResponseBuilder,
        recommenders: RecommenderClient,
        cache: ResponseCache,
        *,
        experiments: ExperimentRuntime | None = None,
    ) -> None:
        """Popular lists are built by ``responses``, and features read through its reader."""
        self.responses = responses
        self.reader = responses.reader
        self.experiments = experiments
        self.recommenders = recommenders
        self.batcher = UserListBatcher(recommenders)
        self.cache = cache

    async def for_user(self, user_id: str, query: RecommendationQuery) -> str | bytes:
        """The list as JSON: a cached one (marked cached), or a freshly computed one."""
        arm = self.experiments.arm(user_id) if self.experiments is not None else None
        if arm is None:
            lookup = await self.cache.lookup(user_id, query)
        else:
            lookup = await self.cache.lookup(
                user_id,
                query,
                variant=f"x{arm.experiment}.{arm.variant}",
                pinned_version=arm.model_version,
            )
        if lookup.entry is not None:
            self._exposed(arm, user_id, served_as_variant=True)
            return cached_json(lookup)
        # One flight per entry *as this lookup saw it*: a miss that already sees a newer
        # version, removal or nonce must not be handed a list being computed before them.
        flight = f"{lookup.stamp}{lookup.key}:{lookup.field}"
        body, as_variant = await self.cache.single_flight(
            flight, lambda: self._compute_for_user(user_id, query, lookup, arm)
        )
        self._exposed(arm, user_id, served_as_variant=as_variant)
        return body

    def _exposed(self, arm: ExperimentArm | None, user_id: str, *, served_as_variant: bool) -> None:
        if arm is not None and served_as_variant and self.experiments is not None:
            self.experiments.exposures.served(arm, user_id)

    async def _compute_for_user(
        self,
        user_id: str,
        query: RecommendationQuery,
        lookup: Lookup,
        arm: ExperimentArm | None,
    ) -> tuple[str | bytes, bool]:
        """The list, and whether it is the variant's (a fallback is nobody's)."""
        try:
            answer = await self.batcher.get(user_id, query, arm)
        except UpstreamUnavailable as error:
            log.warning("fallback for user recommendations: %s", error.detail)
            exclude = (await self.reader.user_context(user_id)).seen if query.exclude_seen else ()
            fallback = await self._popular_fallback(query, exclude=exclude, user_id=user_id)
            return fallback, False
        served = answer.recommendations
        as_variant = arm is not None and served.variant == arm.variant
        if arm is None or as_variant:
            self.cache.store(lookup, served.model_version, answer.body.decode())
        return answer.body, as_variant

    async def similar(self, item_id: str, query: RecommendationQuery) -> str | bytes:
        """The list as JSON, from a recommender, or popular items of the item's kind."""
        try:
            answer = await self.recommenders.get(
                f"/items/{segment(item_id)}/similar?{query_string(query)}"
            )
        except UpstreamUnavailable as error:
            log.warning("fallback for similar items: %s", error.detail)
            item = await self.reader.item(item_id)
            if item is None:
                raise
            category = query.category or (item.categories[0] if item.categories else None)
            fallback_query = query.model_copy(update={"category": category})
            return await self._popular_fallback(fallback_query, exclude=(item_id,), item_id=item_id)
        return answer.body

    async def popular(self, query: RecommendationQuery) -> str:
        """Served here, straight from Redis: it needs no model, so it skips a network hop."""
        ranked, catalogue_version = await self.reader.popular_and_catalogue_version(
            k=query.k, offset=query.offset, category=query.category
        )
        return await self.responses.build(
            ranked, Strategy.POPULAR, catalogue_version=catalogue_version
        )

    async def _popular_fallback(
        self,
        query: RecommendationQuery,
        *,
        exclude: Collection[str],
        user_id: str | None = None,
        item_id: str | None = None,
    ) -> str:
        metrics.FALLBACKS.labels(FALLBACK_REASON).inc()
        ranked, catalogue_version = await self.reader.popular_and_catalogue_version(
            k=query.k,
            offset=query.offset,
            category=query.category,
            exclude=exclude,
        )
        return await self.responses.build(
            ranked,
            Strategy.POPULAR,
            reason=FALLBACK_REASON,
            user_id=user_id,
            item_id=item_id,
            catalogue_version=catalogue_version,
        )
