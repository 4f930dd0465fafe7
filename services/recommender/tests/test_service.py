"""RecommendationService.for_user against real Redis, with features the feature-store wrote."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from recommender.model_store import LoadedModel, ModelHolder
from recommender.service import RecommendationService
from recsys_shared import keys
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import EventType, RecommendationQuery, Recommendations, Strategy


def _parsed(body: str) -> Recommendations:
    """The service answers JSON; every assertion reads it back through the model."""
    return Recommendations.model_validate_json(body)


def _ids(response: Recommendations) -> list[str]:
    return [item.item_id for item in response.items]


def _assert_popular(response: Recommendations, reason: str) -> None:
    """The list is the popular-items fallback, for ``reason``."""
    assert response.strategy is Strategy.POPULAR
    assert response.fallback_reason == reason


async def _assert_recorded(features: Any, response: Recommendations) -> None:
    record = await features.recorded(response.recommendation_id, response.user_id)
    assert record["items"] == _ids(response)
    assert record["user_id"] == response.user_id
    assert record["model_version"] == response.model_version
    assert record["strategy"] == response.strategy.value


@pytest.fixture
def model(holder: ModelHolder) -> LoadedModel:
    """The model the holder serves (version 1, trained on the clusters)."""
    assert holder.current is not None
    return holder.current


async def test_a_user_gets_unseen_items_of_their_own_cluster(
    service: RecommendationService, clusters: Any, features: Any
) -> None:
    response = _parsed(await service.for_user("a0", RecommendationQuery(k=5)))
    assert response.strategy is Strategy.PERSONALIZED
    assert response.model_version == 1
    assert response.fallback_reason is None
    assert response.user_id == "a0"
    served = _ids(response)
    assert len(served) == 5
    assert set(served) <= clusters.cluster_items("a")
    assert not set(served) & set(clusters.history["a0"])
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)
    assert response.items[0].title == f"Item {served[0]}"
    assert response.items[0].categories == ["alpha"]
    await _assert_recorded(features, response)


async def test_every_unseen_item_of_the_cluster_ranks_before_the_other_cluster(
    service: RecommendationService, clusters: Any
) -> None:
    for user in ("a3", "b5"):
        own = clusters.cluster_items(user[0]) - set(clusters.history[user])
        response = _parsed(await service.for_user(user, RecommendationQuery(k=100)))
        served = _ids(response)
        assert len(served) == len(clusters.item_ids) - len(clusters.history[user])
        assert set(served[: len(own)]) == own


async def test_a_trained_user_is_scored_with_their_trained_vector(
    service: RecommendationService, model: LoadedModel, clusters: Any
) -> None:
    response = _parsed(await service.for_user("b2", RecommendationQuery(k=3)))
    expected = model.item_factors @ model.user_factors[clusters.user_ids.index("b2")]
    for item in response.items:
        row = clusters.item_ids.index(item.item_id)
        assert item.score == pytest.approx(float(expected[row]), abs=1e-5)


async def test_seen_items_come_back_when_not_excluded(
    service: RecommendationService, clusters: Any
) -> None:
    seen = set(clusters.history["a1"])
    response = _parsed(await service.for_user("a1", RecommendationQuery(k=12, exclude_seen=False)))
    served = _ids(response)
    assert seen <= set(served)
    assert set(served) == clusters.cluster_items("a")
    excluded = _parsed(await service.for_user("a1", RecommendationQuery(k=12)))
    assert not seen & set(_ids(excluded))


async def test_pages_continue_each_other(service: RecommendationService) -> None:
    first = _parsed(await service.for_user("a4", RecommendationQuery(k=3)))
    second = _parsed(await service.for_user("a4", RecommendationQuery(k=3, offset=3)))
    both = _parsed(await service.for_user("a4", RecommendationQuery(k=6)))
    assert _ids(first) + _ids(second) == _ids(both)
    assert first.recommendation_id != second.recommendation_id


async def test_an_item_made_unavailable_disappears_on_the_next_call(
    service: RecommendationService, features: Any
) -> None:
    before = _ids(_parsed(await service.for_user("a0", RecommendationQuery(k=3))))
    hidden = before[0]
    await features.upsert(hidden, categories=["alpha"], available=False)
    after = _ids(_parsed(await service.for_user("a0", RecommendationQuery(k=3))))
    assert hidden not in after
    assert after[:2] == before[1:]
    await features.upsert(hidden, categories=["alpha"], available=True)
    again = _ids(_parsed(await service.for_user("a0", RecommendationQuery(k=3))))
    assert again == before


async def test_a_deleted_item_disappears_on_the_next_call(
    service: RecommendationService, features: Any
) -> None:
    before = _ids(_parsed(await service.for_user("b1", RecommendationQuery(k=4))))
    assert await features.catalogue.delete(before[1])
    after = _ids(_parsed(await service.for_user("b1", RecommendationQuery(k=4))))
    assert before[1] not in after
    assert after[:3] == [before[0], *before[2:]]
    # Filtered in every category too.
    in_category = _ids(
        _parsed(await service.for_user("b1", RecommendationQuery(k=10, category="beta")))
    )
    assert before[1] not in in_category


@pytest.mark.parametrize(("user", "category"), [("a0", "alpha"), ("a0", "beta"), ("b7", "alpha")])
async def test_a_category_filter_returns_only_items_of_that_category(
    service: RecommendationService, clusters: Any, user: str, category: str
) -> None:
    response = _parsed(await service.for_user(user, RecommendationQuery(k=50, category=category)))
    served = _ids(response)
    in_category = clusters.cluster_items(category[0])
    assert response.strategy is Strategy.PERSONALIZED
    assert set(served) == in_category - set(clusters.history[user])
    assert all(item.categories == [category] for item in response.items)


async def test_a_category_unknown_to_the_catalogue_returns_nothing(
    service: RecommendationService,
) -> None:
    response = _parsed(
        await service.for_user("a0", RecommendationQuery(k=5, category="nothing-here"))
    )
    assert response.strategy is Strategy.PERSONALIZED
    assert response.items == []


async def test_an_unknown_user_gets_popular_items(
    service: RecommendationService, features: Any, redis_client: RedisClient
) -> None:
    response = _parsed(await service.for_user("stranger", RecommendationQuery(k=5)))
    _assert_popular(response, "unknown_user")
    assert response.model_version is None
    expected = await redis_client.execute("ZRANGE", keys.POPULAR, 0, 4, "REV")
    assert _ids(response) == expected
    assert response.items[0].score == pytest.approx(1.0)
    await _assert_recorded(features, response)


async def test_without_a_model_users_get_popular_items(
    service_without_a_model: RecommendationService, features: Any, clusters: Any
) -> None:
    response = _parsed(await service_without_a_model.for_user("a0", RecommendationQuery(k=50)))
    _assert_popular(response, "no_model")
    served = _ids(response)
    assert served
    assert not set(served) & set(clusters.history["a0"])
    await _assert_recorded(features, response)


async def test_a_user_with_only_items_the_model_does_not_know_gets_popular_items(
    service: RecommendationService, features: Any, clusters: Any
) -> None:
    await features.events("newcomer", [clusters.new_item], now=clusters.after_snapshot)
    response = _parsed(await service.for_user("newcomer", RecommendationQuery(k=5)))
    _assert_popular(response, "no_known_items")


async def test_a_user_with_only_a_negative_rating_gets_popular_items_without_it(
    service: RecommendationService, features: Any, clusters: Any
) -> None:
    top = _parsed(await service.for_user("stranger", RecommendationQuery(k=1))).items[0].item_id
    await features.events(
        "critic", [top], now=clusters.after_snapshot, event_type=EventType.RATING, value=1.0
    )
    response = _parsed(await service.for_user("critic", RecommendationQuery(k=5)))
    _assert_popular(response, "no_known_items")
    assert top not in _ids(response)


async def test_a_new_user_is_folded_in_from_their_events(
    service: RecommendationService, features: Any, clusters: Any
) -> None:
    liked = ["B0", "B4", "B9"]
    await features.events("newbie", liked, now=clusters.after_snapshot)
    response = _parsed(await service.for_user("newbie", RecommendationQuery(k=5)))
    assert response.strategy is Strategy.PERSONALIZED
    assert response.model_version == 1
    served = _ids(response)
    assert len(served) == 5
    assert set(served) <= clusters.cluster_items("b") - set(liked)
    await _assert_recorded(features, response)


async def test_new_events_move_a_known_user_without_retraining(
    service: RecommendationService, holder: ModelHolder, features: Any, clusters: Any
) -> None:
    before = _parsed(await service.for_user("a2", RecommendationQuery(k=5)))
    assert set(_ids(before)) <= clusters.cluster_items("a")
    # Events the model has not seen (applied after its snapshot), all on the other cluster.
    switched = ["B1", "B2", "B3", "B5", "B8"]
    for _ in range(4):
        await features.events(
            "a2", switched, now=clusters.after_snapshot, event_type=EventType.PURCHASE
        )
    after = _parsed(await service.for_user("a2", RecommendationQuery(k=5)))
    assert after.strategy is Strategy.PERSONALIZED
    assert after.model_version == holder.serving_version == 1
    served = _ids(after)
    assert served != _ids(before)
    assert set(served) & clusters.cluster_items("b")
    assert not set(served) & set(switched)
    # The top of the list is what the user now does most: the other cluster.
    assert served[0] in clusters.cluster_items("b")


async def test_events_older_than_the_snapshot_do_not_trigger_a_fold_in(
    service: RecommendationService, model: LoadedModel, features: Any, clusters: Any
) -> None:
    # An event the snapshot already included: the trained vector stays authoritative.
    await features.events("b0", ["B11"], now=clusters.snapshot_at - 1.0)
    response = _parsed(await service.for_user("b0", RecommendationQuery(k=3, exclude_seen=False)))
    expected = model.item_factors @ model.user_factors[clusters.user_ids.index("b0")]
    best = np.argsort(-expected)[:3]
    assert _ids(response) == [clusters.item_ids[row] for row in best]


def _without_id(response: Recommendations) -> dict[str, Any]:
    return response.model_dump(exclude={"recommendation_id"})


async def test_a_batch_answers_each_list_as_it_would_be_answered_alone(
    service: RecommendationService, features: Any, clusters: Any
) -> None:
    await features.events("newbie", ["B0", "B4", "B9"], now=clusters.after_snapshot)
    asked = [
        ("a0", RecommendationQuery(k=5)),
        ("stranger", RecommendationQuery(k=3)),  # popular, in the middle of the batch
        ("b2", RecommendationQuery(k=4, offset=2, exclude_seen=False)),
        ("newbie", RecommendationQuery(k=5)),  # folded in
        ("a0", RecommendationQuery(k=3, category="beta")),
        ("a1", RecommendationQuery(k=2)),
    ]

    batch = [_parsed(body) for body in await service.for_users(asked)]
    alone = [_parsed(await service.for_user(user, query)) for user, query in asked]

    assert [_without_id(response) for response in batch] == [
        _without_id(response) for response in alone
    ]
    assert [response.strategy for response in batch] == [
        Strategy.PERSONALIZED,
        Strategy.POPULAR,
        Strategy.PERSONALIZED,
        Strategy.PERSONALIZED,
        Strategy.PERSONALIZED,
        Strategy.PERSONALIZED,
    ]
    assert len({response.recommendation_id for response in batch}) == len(asked)
    for response in batch:
        await _assert_recorded(features, response)


async def test_a_batch_without_a_model_is_all_popular(
    service_without_a_model: RecommendationService, features: Any
) -> None:
    batch = [
        _parsed(body)
        for body in await service_without_a_model.for_users(
            [("a0", RecommendationQuery(k=2)), ("stranger", RecommendationQuery(k=3))]
        )
    ]

    assert [
        (response.user_id, response.fallback_reason, len(response.items)) for response in batch
    ] == [
        ("a0", "no_model", 2),
        ("stranger", "no_model", 3),
    ]


# ── users whose features are gone (erased, or forgotten after the retention period) ────────
async def test_an_erased_user_is_not_personalised_from_the_models_row(
    service: RecommendationService, model: LoadedModel, features: Any, clusters: Any
) -> None:
    await features.erase("a0")
    assert model.users.get("a0") is not None  # the model still knows them: it predates it

    alone = _parsed(await service.for_user("a0", RecommendationQuery(k=5)))
    batch = [
        _parsed(body)
        for body in await service.for_users(
            [("a1", RecommendationQuery(k=5)), ("a0", RecommendationQuery(k=5))]
        )
    ]

    for response in (alone, batch[1]):
        _assert_popular(response, "unknown_user")
        assert response.model_version is None
    assert batch[0].strategy is Strategy.PERSONALIZED  # the others of the batch are not affected


async def test_a_forgotten_user_is_not_personalised_from_the_models_row(
    service: RecommendationService, model: LoadedModel, features: Any, clusters: Any
) -> None:
    partition = features.partitions.of("b3")
    # Every user's last event is an hour old: a retention of a minute forgets them all.
    assert await features.eraser.forget_silent(partition, retention_seconds=60) > 0
    assert model.users.get("b3") is not None

    response = _parsed(await service.for_user("b3", RecommendationQuery(k=5)))

    _assert_popular(response, "unknown_user")


async def test_an_erased_user_who_comes_back_is_folded_in_from_the_new_events_only(
    service: RecommendationService, model: LoadedModel, features: Any, clusters: Any
) -> None:
    await features.erase("a0")
    # Received after the erasure (events sent before it are dropped), on the other cluster.
    liked = ["B0", "B4", "B9"]
    await features.events("a0", liked, now=time.time() + 1.0)

    response = _parsed(await service.for_user("a0", RecommendationQuery(k=5)))

    assert response.strategy is Strategy.PERSONALIZED
    assert response.model_version == 1
    assert set(_ids(response)) <= clusters.cluster_items("b") - set(liked)
    rows, _ = model.items.lookup(liked)
    vector = model.fold_in(rows, np.full(len(rows), 4.0, dtype=np.float32))  # a like weighs 4
    expected = model.item_factors @ vector
    for item in response.items:
        row = clusters.item_ids.index(item.item_id)
        assert item.score == pytest.approx(float(expected[row]), abs=1e-5)


async def test_an_erased_user_who_comes_back_with_only_a_negative_rating_gets_popular_items(
    service: RecommendationService, holder: ModelHolder, features: Any, clusters: Any
) -> None:
    await features.erase("a0")
    await features.events(
        "a0", ["A0"], now=time.time() + 1.0, event_type=EventType.RATING, value=1.0
    )

    response = _parsed(await service.for_user("a0", RecommendationQuery(k=5)))

    # Nothing positive to fold in, and the model's row is of the erased user.
    _assert_popular(response, "no_known_items")
    assert "A0" not in _ids(response)
