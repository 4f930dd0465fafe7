"""RecommendationService.similar: items like an item, by the cosine of their factors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recommender.model_store import ModelHolder
from recommender.service import RecommendationService
from recsys_shared import keys
from recsys_shared.errors import UnknownItem
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import RecommendationQuery, Recommendations, Strategy


def _parsed(body: str) -> Recommendations:
    """The service answers JSON; every assertion reads it back through the model."""
    return Recommendations.model_validate_json(body)


def _ids(response: Recommendations) -> list[str]:
    return [item.item_id for item in response.items]


async def test_similar_items_are_of_the_same_cluster_and_exclude_the_item(
    service: RecommendationService, holder: ModelHolder, clusters: Any, features: Any
) -> None:
    response = _parsed(await service.similar("A0", RecommendationQuery(k=100)))
    assert response.strategy is Strategy.SIMILAR
    assert response.model_version == 1
    assert response.item_id == "A0"
    assert response.user_id is None
    served = _ids(response)
    assert "A0" not in served
    assert len(served) == len(clusters.item_ids) - 1
    own = clusters.cluster_items("a") - {"A0"}
    assert set(served[: len(own)]) == own
    model = holder.current
    assert model is not None
    unit = model.unit_item_factors
    row = clusters.item_ids.index("A0")
    for item in response.items[:3]:
        expected = unit[clusters.item_ids.index(item.item_id)] @ unit[row]
        assert item.score == pytest.approx(float(expected), abs=1e-5)
    record = await features.recorded(response.recommendation_id)
    assert record["items"] == served
    assert record["item_id"] == "A0"


async def test_similar_skips_unavailable_items_and_filters_by_category(
    service: RecommendationService, features: Any, clusters: Any
) -> None:
    before = _ids(_parsed(await service.similar("B3", RecommendationQuery(k=3))))
    await features.upsert(before[0], categories=["beta"], available=False)
    after = _ids(_parsed(await service.similar("B3", RecommendationQuery(k=3))))
    assert before[0] not in after
    assert after[:2] == before[1:]
    other = _parsed(await service.similar("B3", RecommendationQuery(k=50, category="alpha")))
    assert set(_ids(other)) == clusters.cluster_items("a")
    own = _parsed(await service.similar("B3", RecommendationQuery(k=50, category="beta")))
    assert set(_ids(own)) == clusters.cluster_items("b") - {"B3", before[0]}


async def test_similar_pages_continue_each_other(service: RecommendationService) -> None:
    first = _parsed(await service.similar("A7", RecommendationQuery(k=4)))
    second = _parsed(await service.similar("A7", RecommendationQuery(k=4, offset=4)))
    both = _parsed(await service.similar("A7", RecommendationQuery(k=8)))
    assert _ids(first) + _ids(second) == _ids(both)


async def test_an_unknown_item_raises(service: RecommendationService) -> None:
    with pytest.raises(UnknownItem, match="nowhere"):
        _parsed(await service.similar("nowhere", RecommendationQuery()))


async def test_an_item_the_model_has_not_learned_gets_popular_items_of_its_category(
    service: RecommendationService,
    features: Any,
    clusters: Any,
    redis_client: RedisClient,
) -> None:
    new_item = clusters.new_item
    # Make the new item popular itself: it must still not be recommended as similar to itself.
    await features.events("fan", [new_item] * 3, now=clusters.after_snapshot)
    popular_alpha = await redis_client.execute("ZRANGE", keys.popular_in("alpha"), 0, -1, "REV")
    assert new_item in popular_alpha
    response = _parsed(await service.similar(new_item, RecommendationQuery(k=5)))
    assert response.strategy is Strategy.POPULAR
    assert response.fallback_reason == "item_not_in_model"
    assert response.model_version is None
    served = _ids(response)
    assert served == [item for item in popular_alpha if item != new_item][:5]
    assert set(served) <= clusters.cluster_items("a")
    record = await features.recorded(response.recommendation_id)
    assert record["items"] == served


async def test_without_a_model_a_catalogued_item_gets_popular_items(
    service_without_a_model: RecommendationService, clusters: Any
) -> None:
    response = _parsed(await service_without_a_model.similar("B2", RecommendationQuery(k=5)))
    assert response.strategy is Strategy.POPULAR
    assert response.fallback_reason == "no_model"
    assert "B2" not in _ids(response)
    assert set(_ids(response)) <= clusters.cluster_items("b")
    with pytest.raises(UnknownItem):
        _parsed(await service_without_a_model.similar("nowhere", RecommendationQuery()))


def test_unit_factors_are_what_similarity_ranks_by(holder: ModelHolder) -> None:
    model = holder.current
    assert model is not None
    ratio = model.item_factors / model.unit_item_factors
    # Each row is its factor row scaled by one positive number (its norm).
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-4)
    assert (ratio[:, 0] > 0).all()
