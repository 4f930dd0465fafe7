"""Turning a request into a ranked, filtered, attributed list of items."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import numpy as np

from recommender import metrics
from recommender.catalogue_filter import CatalogueFilter
from recommender.model_store import Indexes, LoadedModel, ModelHolder
from recommender.ranking import RankingOptions, ranked_page, similar_scores, user_scores
from recommender.shadow import ShadowJob, ShadowRanker
from recommender.variants import VariantModels
from recsys_shared.errors import ModelUnavailable, UnknownItem
from recsys_shared.experiments.lists import new_id as new_list_id
from recsys_shared.features import UserContext
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import (
    ExperimentArm,
    FallbackReason,
    RecommendationQuery,
    Strategy,
    UserListRequest,
)

log = logging.getLogger(__name__)

#: A user and the query for their list (a ``UserListRequest`` may carry an experiment arm).
Asked = tuple[str, RecommendationQuery]
#: What a user's ranking leaves out, and the rows it is restricted to (a category), if any.
_Filters = tuple[Indexes, Indexes | None]
#: A user's ranked page, the strategy that ranked it, and the items in exploration slots.
_Page = tuple[list[tuple[str, float]], Strategy, frozenset[str]]


class RecommendationService:
    def __init__(
        self,
        responses: ResponseBuilder,
        holder: ModelHolder,
        *,
        ranking: RankingOptions | None = None,
        variants: VariantModels | None = None,
        shadow_cpu_share: float = 0.0,
    ) -> None:
        """Lists are built by ``responses``, and features read through its reader.
        ``variants`` and the builder's ``experiment_lists`` serve experiments: without them
        every user gets the active version and no list is tagged with a variant."""
        self.responses = responses
        self.reader = responses.reader
        self.ranking = ranking or RankingOptions()
        self.holder = holder
        self.variants = variants
        self.catalogue = CatalogueFilter(self.reader)
        experiment_lists = responses.experiment_lists
        self.shadows = (
            ShadowRanker(self._shadow_page, experiment_lists, cpu_share=shadow_cpu_share)
            if variants is not None and experiment_lists is not None and shadow_cpu_share > 0
            else None
        )

    async def for_user(self, user_id: str, query: RecommendationQuery) -> str:
        """The user's list as the JSON of a ``Recommendations``."""
        (listed,) = await self.for_users(((user_id, query),))
        return listed

    async def for_users(self, requests: Sequence[Asked]) -> list[str]:
        """Each user's list as the JSON of a ``Recommendations``, in the order asked.

        One round trip reads every user's context; each user is scored by the active version,
        or by the version their experiment variant pins (``UserListRequest.arm``). Users no
        version can personalise get popular items, each marked with the reason.
        """
        contexts = await self.reader.user_contexts([user_id for user_id, _ in requests])
        models, reasons = await self._models(requests)
        ranked: list[_Page | None] = [None] * len(requests)
        started = time.perf_counter()
        for ranker, indexes in _grouped(models):
            pages = await self._personalised(
                ranker, [requests[i] for i in indexes], [contexts[i] for i in indexes]
            )
            for index, page in zip(indexes, pages, strict=True):
                ranked[index] = page
        if any(page is not None for page in ranked):
            metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
        lists: list[str] = [""] * len(requests)
        fallbacks: list[int] = []
        for index, page in enumerate(ranked):
            chosen = models[index]
            if chosen is None or page is None:
                fallbacks.append(index)
                continue
            lists[index] = await self._respond_ranked(
                requests[index], contexts[index], chosen, page
            )
        if fallbacks:
            # Each fallback reads the popular set: concurrently, so a batch of new users costs
            # one round trip, not one each.
            popular = await asyncio.gather(
                *(
                    self._popular_for(models[i], *requests[i], contexts[i], reasons[i])
                    for i in fallbacks
                )
            )
            for index, listed in zip(fallbacks, popular, strict=True):
                lists[index] = listed
        return lists

    async def _models(
        self, requests: Sequence[Asked]
    ) -> tuple[list[LoadedModel | None], list[str | None]]:
        """The version that ranks each request, and why there is none where there is none."""
        models: list[LoadedModel | None] = []
        reasons: list[str | None] = []
        for _, query in requests:
            arm = _arm(query)
            if arm is None or self.variants is None:
                models.append(self.holder.current)
                reasons.append(None)
                continue
            try:
                models.append(await self.variants.get(arm.model_version))
                reasons.append(None)
            except ModelUnavailable as error:
                log.warning("variant %s unavailable: %s", arm.variant, error.detail)
                models.append(None)
                reasons.append(FallbackReason.VARIANT_UNAVAILABLE)
        return models, reasons

    async def _respond_ranked(
        self, asked: Asked, context: UserContext, model: LoadedModel, page: _Page
    ) -> str:
        user_id, query = asked
        items, strategy, explored = page
        arm = _arm(query)
        recommendation_id = None
        if arm is not None and arm.shadow_version is not None and self.shadows is not None:
            recommendation_id = new_list_id(arm.experiment)
            self.shadows.submit(
                ShadowJob(user_id, query, context, arm, recommendation_id, [i for i, _ in items])
            )
        return await self._respond(
            items,
            strategy,
            None,
            model.version,
            user_id=user_id,
            catalogue_version=context.catalogue_version,
            explored=explored,
            arm=arm,
            recommendation_id=recommendation_id,
        )

    async def _popular_for(
        self,
        model: LoadedModel | None,
        user_id: str,
        query: RecommendationQuery,
        context: UserContext,
        reason: str | None = None,
    ) -> str:
        # The variant's list even when it is popular items (a new user): every user assigned
        # to a variant counts for it. Not when the variant could not be loaded here.
        arm = _arm(query) if reason is None else None
        if reason is None and model is None:
            reason = FallbackReason.NO_MODEL
        elif reason is None:
            reason = (
                FallbackReason.UNKNOWN_USER
                if not context.weights
                else FallbackReason.NO_KNOWN_ITEMS
            )
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
            arm=arm,
        )

    async def _personalised(
        self,
        model: LoadedModel,
        requests: Sequence[Asked],
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

    async def _shadow_page(self, job: ShadowJob) -> list[str] | None:
        """The shadow version's ranking of a request (its item ids); None if it cannot
        personalise it."""
        assert self.variants is not None
        assert job.arm.shadow_version is not None
        model = await self.variants.get(job.arm.shadow_version)
        (page,) = await self._personalised(model, [(job.user_id, job.query)], [job.context])
        return [item for item, _ in page[0]] if page is not None else None

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
            reason = FallbackReason.NO_MODEL if model is None else FallbackReason.ITEM_NOT_IN_MODEL
            return await self._respond(popular, Strategy.POPULAR, reason, None, item_id=item_id)
        scores = similar_scores(model, row)
        if scores is None:  # outside an item-item model's items, and no content to go by
            popular = await self.reader.popular(
                k=query.k, offset=query.offset, category=query.category, exclude=(item_id,)
            )
            return await self._respond(
                popular, Strategy.POPULAR, FallbackReason.ITEM_NOT_IN_MODEL, None, item_id=item_id
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
        arm: ExperimentArm | None = None,
        recommendation_id: str | None = None,
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
            arm=arm,
            recommendation_id=recommendation_id,
        )


def _arm(query: RecommendationQuery) -> ExperimentArm | None:
    return query.arm if isinstance(query, UserListRequest) else None


def _grouped(models: Sequence[LoadedModel | None]) -> list[tuple[LoadedModel, list[int]]]:
    """The requests each version scores, by index."""
    groups: dict[int, tuple[LoadedModel, list[int]]] = {}
    for index, model in enumerate(models):
        if model is not None:
            groups.setdefault(id(model), (model, []))[1].append(index)
    return list(groups.values())
