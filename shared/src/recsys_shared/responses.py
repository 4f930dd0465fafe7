"""Finishing a recommendation list: titles attached, an id minted, what was served recorded.

Shared by the recommender and by the gateway's fallback, so a list looks and is attributed the
same whichever of them produced it.
"""

from __future__ import annotations

import json
import time
import uuid

from recsys_shared import keys
from recsys_shared.features import FeatureReader
from recsys_shared.multiplexed import MultiplexedRedis
from recsys_shared.schemas import Recommendations, ScoredItem, Strategy


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
    ) -> Recommendations:
        recommendation_id = uuid.uuid4().hex
        item_ids = [item for item, _ in ranked]
        record = {
            "user_id": user_id,
            "item_id": item_id,
            "items": item_ids,
            "model_version": version,
            "strategy": strategy.value,
            "served_at": time.time(),
        }
        # Both commands are on the wire before either reply is awaited: one round trip.
        record_stored = self.redis.execute(
            "SET",
            keys.recommendation(recommendation_id),
            json.dumps(record),
            "EX",
            self.record_ttl_seconds,
        )
        details = await self.reader.item_details(item_ids)
        await record_stored
        items = [
            ScoredItem(
                item_id=item,
                score=round(score, 6),
                title=details[item].title if item in details else None,
                categories=details[item].categories if item in details else None,
            )
            for item, score in ranked
        ]
        return Recommendations(
            user_id=user_id,
            item_id=item_id,
            items=items,
            model_version=version,
            strategy=strategy,
            fallback_reason=reason,
            recommendation_id=recommendation_id,
        )
