"""The recommender serves item-item recipes (item-kNN's sparse neighbours, EASE's dense block),
cold items by content, exploration slots and MMR, from artifacts written as the worker does."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recommender.model_store import ModelHolder
from recommender.ranking import RankingOptions
from recommender.service import RecommendationService
from recsys_shared import keys
from recsys_shared.artifacts import (
    CONTENT_FILE,
    IDS_FILE,
    MODEL_FILE,
    ArtifactStore,
    ItemItemArrays,
    model_folder,
    npz_bytes,
    sparse_arrays,
)
from recsys_shared.features import FeatureReader
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import (
    EaseRecipe,
    ItemKnnRecipe,
    ModelInfo,
    ModelStatus,
    Recipe,
    RecommendationQuery,
)

pytestmark = pytest.mark.usefixtures("features")
PARTITIONS = keys.Partitions(3)  # as the features fixture writes them


def _same_cluster(items: list[str]) -> csr_matrix:
    """1 between two items of the same cluster (first letter), 0 otherwise, none on the diagonal."""
    n = len(items)
    dense = np.array(
        [[float(a[0] == b[0] and a != b) for b in items] for a in items], dtype=np.float32
    )
    return csr_matrix(dense, shape=(n, n))


async def _publish(
    store: ArtifactStore,
    registry: ModelRegistry,
    recipe: Recipe,
    arrays: ItemItemArrays,
    user_ids: list[str],
    item_ids: list[str],
    cold: set[str],
) -> ModelInfo:
    content = _same_cluster(item_ids)  # the catalogue's categories are the clusters
    files = {
        MODEL_FILE: arrays.to_npz(),
        IDS_FILE: npz_bytes(
            user_ids=np.array(user_ids),
            item_ids=np.array(item_ids),
            item_counts=np.array([0 if item in cold else 5 for item in item_ids]),
        ),
        CONTENT_FILE: npz_bytes(**sparse_arrays("content", content)),
    }
    store.write_bundle(model_folder(2), files, {"version": 2})
    info = ModelInfo(
        version=2,
        status=ModelStatus.CANDIDATE,
        algorithm=recipe.algorithm,
        recipe=recipe,
        created_at=datetime.now(UTC),
        snapshot_id="snap-2",
        data={"snapshot_created_at": datetime.now(UTC).timestamp()},
        artifact_url=store.url(model_folder(2)),
    )
    await registry.publish(info, reason="test")
    return info


Service = Callable[..., RecommendationService]


@pytest.fixture
def item_item_service(
    redis_client: RedisClient,
    new_holder: Callable[[], ModelHolder],
    artifact_store: ArtifactStore,
    registry: ModelRegistry,
    clusters: object,
) -> Callable[..., object]:
    async def make(
        kind: str, options: RankingOptions | None = None, cold: frozenset[str] = frozenset()
    ) -> RecommendationService:
        user_ids = list(clusters.user_ids)  # type: ignore[attr-defined]
        item_ids = [*clusters.item_ids, clusters.new_item]  # type: ignore[attr-defined]
        dense = _same_cluster(item_ids).toarray()
        for item in cold:  # a cold item has no collaborative neighbours
            dense[item_ids.index(item)] = 0
            dense[:, item_ids.index(item)] = 0
        similarity = csr_matrix(dense)
        if kind == "item_knn":
            recipe: Recipe = ItemKnnRecipe()
            arrays = ItemItemArrays(np.empty(0, dtype=np.int64), np.empty((0, 0), "f4"), similarity)
        else:
            recipe = EaseRecipe()
            columns = np.array([i for i, item in enumerate(item_ids) if item not in cold])
            block = similarity[columns][:, columns].toarray()
            empty = csr_matrix(similarity.shape, dtype=np.float32)
            arrays = ItemItemArrays(columns.astype(np.int64), block, empty)
        await _publish(artifact_store, registry, recipe, arrays, user_ids, item_ids, set(cold))
        holder = new_holder()
        await holder.refresh()
        reader = FeatureReader(redis_client, PARTITIONS)
        responses = ResponseBuilder(reader, redis_client, record_ttl_seconds=60)
        return RecommendationService(responses, holder, ranking=options)

    return make


@pytest.fixture(params=["item_knn", "ease"])
async def each_item_item_kind(
    request: pytest.FixtureRequest, item_item_service: Callable[..., object]
) -> RecommendationService:
    """The service over each item-item kind in turn, with no cold item and default ranking."""
    service: RecommendationService = await item_item_service(request.param)  # type: ignore[misc]
    return service


async def test_an_item_item_model_ranks_the_users_cluster(
    each_item_item_kind: RecommendationService,
) -> None:
    body = json.loads(await each_item_item_kind.for_user("b3", RecommendationQuery(k=5)))

    assert body["strategy"] == "personalized"
    assert body["model_version"] == 2
    assert len(body["items"]) == 5
    assert all(item["item_id"].startswith("B") for item in body["items"])


async def test_similar_items_of_an_item_item_model(
    each_item_item_kind: RecommendationService,
) -> None:
    body = json.loads(await each_item_item_kind.similar("A1", RecommendationQuery(k=4)))

    assert body["strategy"] == "similar"
    assert {item["item_id"][0] for item in body["items"]} == {"A"}
    assert "A1" not in {item["item_id"] for item in body["items"]}


async def test_a_cold_item_has_similar_items_by_content(
    item_item_service: Callable[..., object],
) -> None:
    service = await item_item_service("ease", cold=frozenset({"Anew"}))  # type: ignore[misc]

    body = json.loads(await service.similar("Anew", RecommendationQuery(k=4)))

    assert body["strategy"] == "content"
    assert {item["item_id"][0] for item in body["items"]} == {"A"}


async def test_a_user_of_only_cold_items_gets_a_content_list(
    item_item_service: Callable[..., object], features: object
) -> None:
    service = await item_item_service("ease", cold=frozenset({"Anew"}))  # type: ignore[misc]
    await features.events("newcomer", ["Anew"], now=datetime.now(UTC).timestamp())  # type: ignore[attr-defined]

    body = json.loads(await service.for_user("newcomer", RecommendationQuery(k=5)))

    assert body["strategy"] == "content"
    assert {item["item_id"][0] for item in body["items"]} == {"A"}


async def test_a_cold_item_takes_an_exploration_slot(
    item_item_service: Callable[..., object],
) -> None:
    options = RankingOptions(exploration_share=0.2, similar_exploration_share=0.2)
    service = await item_item_service("ease", options, frozenset({"Anew"}))  # type: ignore[misc]

    body = json.loads(await service.for_user("a2", RecommendationQuery(k=5)))
    similar = json.loads(await service.similar("A1", RecommendationQuery(k=5)))
    later_page = json.loads(await service.for_user("a2", RecommendationQuery(k=5, offset=5)))

    for listed in (body, similar):
        explored = [item for item in listed["items"] if item.get("exploration")]
        assert [item["item_id"] for item in explored] == ["Anew"]
        assert listed["items"][-1]["item_id"] == "Anew"
        assert len(listed["items"]) == 5
    assert all("exploration" not in item for item in later_page["items"])
    # b users' histories say nothing for an alpha item: no exploration slot is forced on them.
    b_list = json.loads(await service.for_user("b2", RecommendationQuery(k=5)))
    assert all("exploration" not in item for item in b_list["items"])


async def test_mmr_trades_relevance_for_variety(item_item_service: Callable[..., object]) -> None:
    plain = await item_item_service("item_knn")  # type: ignore[misc]
    before = json.loads(await plain.for_user("a2", RecommendationQuery(k=6)))
    diverse = await item_item_service("item_knn", RankingOptions(mmr_lambda=0.0))  # type: ignore[misc]
    after = json.loads(await diverse.for_user("a2", RecommendationQuery(k=6)))

    assert {item["item_id"][0] for item in before["items"]} == {"A"}
    # Content says every alpha item is like every other: pure diversity reaches for beta.
    assert {item["item_id"][0] for item in after["items"]} == {"A", "B"}
