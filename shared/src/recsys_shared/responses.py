"""Finishing a recommendation list: titles attached, an id minted, what was served recorded.

Shared by the recommender and by the gateway's fallback, so a list looks and is attributed the
same whichever of them produced it.

The list's JSON is written here directly, not through the ``Recommendations`` model: building
a ``ScoredItem`` per item, parsing each item's stored categories and serialising it all again
cost more than scoring the user. :func:`render` writes the model's JSON, field for field and
in the model's order (a property test compares the two on arbitrary input), the stored
categories go in as the JSON the feature-store wrote, and the gateway validates every list it
forwards against the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from typing import TypedDict, Unpack

from recsys_shared import keys, metrics
from recsys_shared.background import fire_and_forget
from recsys_shared.errors import StoreError, StoreUnavailable
from recsys_shared.experiments import lists
from recsys_shared.features import FeatureReader, ItemDetails, json_string
from recsys_shared.memory_guard import MemoryGuard
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import ExperimentArm, ServedList, Strategy

#: The end of an item's JSON when the catalogue does not know it (see ItemDetails.json_tail).
_NO_DETAILS = ',"title":null,"categories":null}'
#: The marker of an item in an exploration slot (ScoredItem.exploration).
_EXPLORATION = ',"exploration":true'


def _optional(text: str | None) -> str:
    return "null" if text is None else json_string(text)


def _optional_integer(number: int | None) -> str:
    return "null" if number is None else str(number)


class ItemDetailsCache:
    """Item details by id, kept while the catalogue version stays the same.

    The feature-store bumps the catalogue version with every item write, and the recommender
    reads it with every user's context: a title served from here is never older than that
    request's view of the catalogue, and a list whose items are all known needs no round trip
    for its details. Holds at most one entry per item that was ever recommended.
    """

    MAX_ENTRIES = 500_000

    def __init__(self, reader: FeatureReader) -> None:
        self.reader = reader
        self._version: int | None = None
        self._details: dict[str, ItemDetails | None] = {}

    async def get(
        self, item_ids: Sequence[str], catalogue_version: int
    ) -> list[ItemDetails | None]:
        if catalogue_version != self._version or len(self._details) > self.MAX_ENTRIES:
            self._version, self._details = catalogue_version, {}
        # This version's entries: if a newer version replaces them while the read below is
        # out, its answer lands in the replaced dict and never reaches the newer one.
        details = self._details
        missing = [item for item in item_ids if item not in details]
        if missing:
            fetched = await self.reader.item_details(missing)
            details.update(zip(missing, fetched, strict=True))
        return [details[item] for item in item_ids]


class ListFields(TypedDict, total=False):
    """What a list says besides its items, each optional: the fallback ``reason``, the model
    ``version``, the user or item it is for, the ``catalogue_version`` the request read, the
    items ``explored`` (in exploration slots), the experiment ``arm`` and a
    ``recommendation_id`` minted for it beforehand. Declared once, so a caller that adds to a
    list (a metric, a log line) passes them on as ``**fields`` without repeating them."""

    reason: str | None
    version: int | None
    user_id: str | None
    item_id: str | None
    catalogue_version: int | None
    explored: Collection[str]
    arm: ExperimentArm | None
    recommendation_id: str | None


class ResponseBuilder:
    def __init__(
        self,
        reader: FeatureReader,
        records: RedisClient,
        *,
        record_ttl_seconds: int,
        memory_guard: MemoryGuard | None = None,
        experiment_lists: lists.ExperimentLists | None = None,
    ) -> None:
        """Details are read through ``reader``; records are written on ``records`` (the
        ephemeral Redis when there is one), an experiment's on ``experiment_lists`` (the data
        tier: see :mod:`recsys_shared.experiments.lists`)."""
        self.redis = records
        self.reader = reader
        self.details = ItemDetailsCache(self.reader)
        self.record_ttl_seconds = record_ttl_seconds
        self.memory_guard = memory_guard
        self.experiment_lists = experiment_lists

    async def build(
        self, ranked: list[tuple[str, float]], strategy: Strategy, **fields: Unpack[ListFields]
    ) -> str:
        """The list as the JSON of a ``Recommendations``, recorded under a new id.

        With the ``catalogue_version`` the request read, item details come from the
        :class:`ItemDetailsCache`; without it, from Redis. Items in ``explored`` are marked
        as exploration slots. A user's list within an experiment (``arm``) carries its
        variant and is recorded for the experiment (under ``recommendation_id`` if given, made
        with ``lists.new_id``).
        """
        user_id, item_id = fields.get("user_id"), fields.get("item_id")
        version, arm = fields.get("version"), fields.get("arm")
        recommendation_id = fields.get("recommendation_id")
        item_ids = [item for item, _ in ranked]
        if arm is not None and user_id is not None and self.experiment_lists is not None:
            recommendation_id = recommendation_id or lists.new_id(arm.experiment)
            await self._record_for_experiment(
                recommendation_id, item_ids, strategy, version, user_id, arm
            )
        else:
            arm = None
            recommendation_id = os.urandom(16).hex()
            self._record(recommendation_id, item_ids, strategy, version, user_id, item_id)
        if (catalogue_version := fields.get("catalogue_version")) is None:
            details = await self.reader.item_details(item_ids)
        else:
            details = await self.details.get(item_ids, catalogue_version)
        return render(
            [(item, score, found) for (item, score), found in zip(ranked, details, strict=True)],
            strategy=strategy,
            reason=fields.get("reason"),
            version=version,
            user_id=user_id,
            item_id=item_id,
            recommendation_id=recommendation_id,
            explored=fields.get("explored", ()),
            variant=arm.variant if arm is not None else None,
        )

    async def _record_for_experiment(
        self,
        recommendation_id: str,
        item_ids: list[str],
        strategy: Strategy,
        version: int | None,
        user_id: str,
        arm: ExperimentArm,
    ) -> None:
        """Keep what an experiment served, on the data tier and never shed: its decision
        rests on the events attributed to it. Awaited (one round trip), so an event naming
        the list always finds it; if it cannot be written the list is served unattributed."""
        assert self.experiment_lists is not None
        record = ServedList.model_construct(
            user_id=user_id,
            items=item_ids,
            model_version=version,
            strategy=strategy,
            served_at=time.time(),
            experiment=arm.experiment,
            variant=arm.variant,
        )
        try:
            await self.experiment_lists.record(
                user_id,
                arm.experiment,
                [(recommendation_id, record.model_dump_json())],
                ranked_at=record.served_at,
            )
        except (StoreUnavailable, StoreError) as error:
            _count_lost_record(error)

    def _record(
        self,
        recommendation_id: str,
        item_ids: list[str],
        strategy: Strategy,
        version: int | None,
        user_id: str | None,
        item_id: str | None,
    ) -> None:
        """Keep what was served, to attribute later events to it. Not awaited: the list is
        served without waiting for its record, and when only the record failed (counted).
        An event naming the list arrives after a client round trip, by which time the record
        is written. Skipped while Redis is near its memory limit (see
        :mod:`recsys_shared.memory_guard`)."""
        if self.memory_guard is not None and self.memory_guard.shed("record"):
            return
        record = ServedList.model_construct(
            user_id=user_id,
            item_id=item_id,
            items=item_ids,
            model_version=version,
            strategy=strategy,
            served_at=time.time(),
        )
        stored = self.redis.execute(
            "SET",
            keys.recommendation(user_id, recommendation_id),
            record.model_dump_json(),
            "EX",
            self.record_ttl_seconds,
        )
        fire_and_forget(stored, _count_lost_record)


def _count_lost_record(_: BaseException) -> None:
    metrics.LOST_RECOMMENDATION_RECORDS.inc()


def render(
    items: Sequence[tuple[str, float, ItemDetails | None]],
    *,
    strategy: Strategy,
    recommendation_id: str,
    reason: str | None = None,
    version: int | None = None,
    user_id: str | None = None,
    item_id: str | None = None,
    explored: Collection[str] = (),
    variant: str | None = None,
) -> str:
    """The JSON of ``Recommendations(...)`` for these fields, freshly computed (not cached).
    An item in ``explored`` carries ``"exploration":true``; the others leave the field out."""
    listed = ",".join(
        f'{{"item_id":{json_string(item)},"score":{round(score, 6)!r}'
        f"{_EXPLORATION if explored and item in explored else ''}"
        f"{details.json_tail if details is not None else _NO_DETAILS}"
        for item, score, details in items
    )
    return (
        f'{{"user_id":{_optional(user_id)},"item_id":{_optional(item_id)},"items":[{listed}],'
        f'"model_version":{_optional_integer(version)},"strategy":"{strategy.value}",'
        f'"fallback_reason":{_optional(reason)},"recommendation_id":"{recommendation_id}",'
        f'"variant":{_optional(variant)},"cached":false,"cache_age_seconds":null}}'
    )
