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

import json
import os
import time
from collections.abc import Sequence

from recsys_shared import keys
from recsys_shared.features import FeatureReader, ItemDetails
from recsys_shared.multiplexed import MultiplexedRedis
from recsys_shared.schemas import Strategy

_dumps = json.dumps


class ResponseBuilder:
    def __init__(self, client: MultiplexedRedis, *, record_ttl_seconds: int) -> None:
        self.redis = client
        self.reader = FeatureReader(client)
        self.record_ttl_seconds = record_ttl_seconds

    async def build(
        self,
        ranked: list[tuple[str, float]],
        strategy: Strategy,
        *,
        reason: str | None = None,
        version: int | None = None,
        user_id: str | None = None,
        item_id: str | None = None,
    ) -> str:
        """The list as the JSON of a ``Recommendations``, recorded under a new id."""
        recommendation_id = os.urandom(16).hex()
        item_ids = [item for item, _ in ranked]
        record = {
            "user_id": user_id,
            "item_id": item_id,
            "items": item_ids,
            "model_version": version,
            "strategy": strategy.value,
            "served_at": time.time(),
        }
        # Both commands are queued before either reply is awaited: one write, one round trip.
        record_stored = self.redis.execute(
            "SET",
            keys.recommendation(recommendation_id),
            _dumps(record),
            "EX",
            self.record_ttl_seconds,
        )
        details = await self.reader.item_details(item_ids)
        await record_stored
        return render(
            [(item, score, found) for (item, score), found in zip(ranked, details, strict=True)],
            strategy=strategy,
            reason=reason,
            version=version,
            user_id=user_id,
            item_id=item_id,
            recommendation_id=recommendation_id,
        )


def render(
    items: Sequence[tuple[str, float, ItemDetails | None]],
    *,
    strategy: Strategy,
    recommendation_id: str,
    reason: str | None = None,
    version: int | None = None,
    user_id: str | None = None,
    item_id: str | None = None,
) -> str:
    """The JSON of ``Recommendations(...)`` for these fields, freshly computed (not cached)."""
    listed = ",".join(
        f'{{"item_id":{_dumps(item)},"score":{round(score, 6)!r},'
        + (
            f'"title":{_dumps(details.title)},"categories":{details.categories_json}}}'
            if details is not None
            else '"title":null,"categories":null}'
        )
        for item, score, details in items
    )
    return (
        f'{{"user_id":{_dumps(user_id)},"item_id":{_dumps(item_id)},"items":[{listed}],'
        f'"model_version":{_dumps(version)},"strategy":"{strategy.value}",'
        f'"fallback_reason":{_dumps(reason)},"recommendation_id":"{recommendation_id}",'
        '"cached":false,"cache_age_seconds":null}'
    )
