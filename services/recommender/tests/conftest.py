"""Fixtures for the recommender's tests: a tiny trained model, its artifact, and real features.

The data are two taste clusters (a checkerboard): users ``a*`` interact only with items ``A*``
(category "alpha"), users ``b*`` only with items ``B*`` (category "beta"). A model trained on it
separates the clusters cleanly, so "the right cluster" is something a test can assert.

Times: the features are written at ``FEATURES_AT``; the model's snapshot was taken at
``SNAPSHOT_AT`` (after them); events a test applies "later" use ``AFTER_SNAPSHOT``.

The users are spread over ``PARTITIONS`` (three event partitions), so every read of a user's
features goes to their own partition's keys, as in a partitioned deployment.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix

from feature_store.applier import EventApplier
from feature_store.catalogue import Catalogue
from feature_store.erasure import Eraser
from feature_store.merger import PopularityMerger
from recommender.model_store import ModelHolder
from recommender.service import RecommendationService
from recsys_shared import keys
from recsys_shared.artifacts import IDS_FILE, MODEL_FILE, ArtifactStore, model_folder, npz_bytes
from recsys_shared.features import FeatureReader
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.responses import ResponseBuilder
from recsys_shared.schemas import EventType, ItemWithId, ModelInfo, ModelStatus, StoredEvent

USERS_PER_CLUSTER = 16
ITEMS_PER_CLUSTER = 12
ITEMS_PER_USER = 6
FEATURES_AT = time.time() - 3600.0
SNAPSHOT_AT = FEATURES_AT + 10.0
AFTER_SNAPSHOT = FEATURES_AT + 20.0
#: In the catalogue (category "alpha") but never seen by the model.
NEW_ITEM = "Anew"
CATEGORY = {"a": "alpha", "b": "beta"}
#: The event partitions of the tests' deployment (``EVENT_PARTITIONS=3``).
PARTITIONS = keys.Partitions(3)


@dataclass(frozen=True)
class Clusters:
    user_ids: list[str]
    item_ids: list[str]
    history: dict[str, list[str]] = field(default_factory=dict)
    features_at: float = FEATURES_AT
    snapshot_at: float = SNAPSHOT_AT
    after_snapshot: float = AFTER_SNAPSHOT
    new_item: str = NEW_ITEM

    def cluster_items(self, cluster: str) -> set[str]:
        return {item for item in self.item_ids if item.startswith(cluster.upper())}

    def matrix(self) -> csr_matrix:
        user_rows = {user: row for row, user in enumerate(self.user_ids)}
        item_rows = {item: row for row, item in enumerate(self.item_ids)}
        rows, cols = [], []
        for user, items in self.history.items():
            for item in items:
                rows.append(user_rows[user])
                cols.append(item_rows[item])
        data = np.full(len(rows), 4.0, dtype=np.float32)  # a "like"
        return csr_matrix(
            (data, (rows, cols)), shape=(len(self.user_ids), len(self.item_ids)), dtype=np.float32
        )


def _make_clusters() -> Clusters:
    generator = random.Random(7)
    user_ids: list[str] = []
    item_ids: list[str] = []
    history: dict[str, list[str]] = {}
    for cluster in ("a", "b"):
        catalogue = [f"{cluster.upper()}{index}" for index in range(ITEMS_PER_CLUSTER)]
        item_ids += catalogue
        for index in range(USERS_PER_CLUSTER):
            user = f"{cluster}{index}"
            user_ids.append(user)
            history[user] = sorted(generator.sample(catalogue, ITEMS_PER_USER))
    return Clusters(user_ids=user_ids, item_ids=item_ids, history=history)


def train(matrix: csr_matrix) -> AlternatingLeastSquares:
    model = AlternatingLeastSquares(
        factors=8, iterations=10, regularization=5.0, random_state=0, num_threads=1
    )
    model.fit(matrix, show_progress=False)
    return model


@pytest.fixture(scope="session")
def clusters() -> Clusters:
    return _make_clusters()


@pytest.fixture(scope="session")
def als_model(clusters: Clusters) -> AlternatingLeastSquares:
    return train(clusters.matrix())


@pytest.fixture(scope="session")
def als_model_bytes(als_model: AlternatingLeastSquares) -> bytes:
    buffer = io.BytesIO()
    als_model.save(buffer)
    return buffer.getvalue()


@pytest.fixture
def artifact_store(tmp_path: Any) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path}/artifacts")


WriteModel = Callable[..., ModelInfo]


@pytest.fixture
def write_model(
    artifact_store: ArtifactStore, clusters: Clusters, als_model_bytes: bytes
) -> WriteModel:
    """Write a version's bundle as the worker does; returns its (unpublished) registry entry."""

    def write(
        version: int,
        *,
        model_bytes: bytes | None = None,
        user_ids: Iterable[str] | None = None,
        item_ids: Iterable[str] | None = None,
        snapshot_created_at: float = SNAPSHOT_AT,
    ) -> ModelInfo:
        files = {
            MODEL_FILE: als_model_bytes if model_bytes is None else model_bytes,
            IDS_FILE: npz_bytes(
                user_ids=np.array(list(clusters.user_ids if user_ids is None else user_ids)),
                item_ids=np.array(list(clusters.item_ids if item_ids is None else item_ids)),
            ),
        }
        artifact_store.write_bundle(
            model_folder(version),
            files,
            {"version": version, "algorithm": "als", "snapshot_id": f"snap-{version}"},
        )
        return ModelInfo(
            version=version,
            status=ModelStatus.CANDIDATE,
            algorithm="als",
            params={"factors": 8},
            created_at=datetime.now(UTC),
            snapshot_id=f"snap-{version}",
            data={"snapshot_created_at": snapshot_created_at},
            artifact_url=artifact_store.url(model_folder(version)),
        )

    return write


@pytest.fixture
def registry(redis_client: RedisClient) -> ModelRegistry:
    return ModelRegistry(redis_client)


@pytest.fixture
async def model_v1(write_model: WriteModel, registry: ModelRegistry) -> ModelInfo:
    """Version 1, trained on the clusters, written and published as the active version."""
    info = write_model(1)
    await registry.publish(info, reason="test")
    return info


@pytest.fixture
def new_holder(
    redis_client: RedisClient, artifact_store: ArtifactStore
) -> Callable[[], ModelHolder]:
    return lambda: ModelHolder(redis_client, artifact_store, poll_seconds=0.2)


@pytest.fixture
async def holder(model_v1: ModelInfo, new_holder: Callable[[], ModelHolder]) -> ModelHolder:
    loaded = new_holder()
    await loaded.refresh()
    assert loaded.serving_version == model_v1.version
    return loaded


class Features:
    """Writes through the feature-store's own classes, as its consumer and API would: events go
    into their user's partition stream, are read through the consumer group and applied, and
    popularity is merged over the partitions as the feature-store's merger does."""

    def __init__(self, client: RedisClient, partitions: keys.Partitions = PARTITIONS) -> None:
        self.redis = client
        self.partitions = partitions
        self.catalogue = Catalogue(client)
        self.applier = EventApplier(client, history_cap=100, half_life_days=7.0)
        self.merger = PopularityMerger(client, partitions, full_every_seconds=600)
        self.eraser = Eraser(client, partitions, ephemeral=client)
        self._sequence = 0

    async def create_groups(self) -> None:
        for partition in self.partitions.all:
            await self.redis.execute(
                "XGROUP", "CREATE", partition.events, keys.EVENTS_GROUP, "0", "MKSTREAM"
            )

    async def events(
        self,
        user_id: str,
        item_ids: Iterable[str],
        *,
        now: float,
        event_type: EventType = EventType.LIKE,
        value: float | None = None,
    ) -> None:
        """Apply one event per item for the user, as if received and applied at ``now``."""
        partition = self.partitions.of(user_id)
        events = []
        for item_id in item_ids:
            self._sequence += 1
            events.append(
                StoredEvent(
                    event_id=f"e{self._sequence}",
                    user_id=user_id,
                    item_id=item_id,
                    type=event_type,
                    value=value,
                    ts=now - 1.0,
                    received_at=now,
                )
            )
        for event in events:
            await self.redis.execute(
                "XADD", partition.events, "*", keys.EVENT_FIELD, event.model_dump_json()
            )
        reply = await self.redis.execute(
            "XREADGROUP", "GROUP", keys.EVENTS_GROUP, "tests", "COUNT", len(events),
            "STREAMS", partition.events, ">",
        )  # fmt: skip
        stream_ids = list(reply[partition.events])
        result = await self.applier.apply(
            partition, list(zip(stream_ids, events, strict=True)), now=now
        )
        assert result.applied == len(events)
        await self.merger.run_once()

    async def erase(self, user_id: str) -> None:
        """Erase the user as ``DELETE /v1/users/{id}`` does."""
        await self.eraser.erase(user_id)

    async def upsert(self, item_id: str, *, categories: list[str], available: bool = True) -> None:
        await self.catalogue.upsert(
            [
                ItemWithId(
                    item_id=item_id,
                    title=f"Item {item_id}",
                    categories=categories,
                    available=available,
                )
            ]
        )

    async def recorded(self, recommendation_id: str, user_id: str | None = None) -> dict[str, Any]:
        """The served-list record of a list served to ``user_id`` (None: to nobody)."""
        raw = await self.redis.execute("GET", keys.recommendation(user_id, recommendation_id))
        assert raw is not None, "the served list was not recorded"
        record: dict[str, Any] = json.loads(raw)
        return record


@pytest.fixture
async def features(redis_client: RedisClient, clusters: Clusters) -> Features:
    """The catalogue (plus ``NEW_ITEM``) and every user's history, applied before the snapshot."""
    writer = Features(redis_client)
    await writer.create_groups()
    await writer.catalogue.upsert(
        [
            ItemWithId(item_id=item, title=f"Item {item}", categories=[CATEGORY[item[0].lower()]])
            for item in [*clusters.item_ids, NEW_ITEM]
        ]
    )
    for user, items in clusters.history.items():
        await writer.events(user, items, now=FEATURES_AT)
    return writer


NewService = Callable[[ModelHolder], RecommendationService]


@pytest.fixture
def new_service(redis_client: RedisClient) -> NewService:
    """A service around a holder, reading features and writing records on the test's Redis."""
    return lambda holder: RecommendationService(
        ResponseBuilder(
            FeatureReader(redis_client, PARTITIONS), redis_client, record_ttl_seconds=3600
        ),
        holder,
    )


@pytest.fixture
def service(
    new_service: NewService, holder: ModelHolder, features: Features
) -> RecommendationService:
    return new_service(holder)


@pytest.fixture
async def service_without_a_model(
    new_service: NewService, new_holder: Callable[[], ModelHolder], features: Features
) -> RecommendationService:
    """A service whose holder looked for the active model and found none: every list falls
    back to popular items."""
    holder = new_holder()
    await holder.refresh()
    return new_service(holder)
