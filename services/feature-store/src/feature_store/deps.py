"""The feature-store's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from feature_store.catalogue import Catalogue
from feature_store.config import Settings
from feature_store.consumer import StreamConsumer
from feature_store.erasure import Eraser
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.redis import RedisClient
from recsys_shared.web.state import state_dependency


@dataclass(frozen=True, slots=True)
class FeatureStoreState:
    """What the routes and the health checks use, created once in the lifespan
    (``feature_store.main``)."""

    settings: Settings
    redis: RedisClient
    catalogue: Catalogue
    eraser: Eraser
    store: ArtifactStore
    consumer: StreamConsumer
    consumer_task: asyncio.Task[None]  # the partitions' readers, watched by the health checks
    started_at: float  # the readers' staleness counts from here until their first read


# Settings come from here too, not from a dependency override: FastAPI re-analyses every
# dependency of every request while any override is registered.
StateDep = Annotated[FeatureStoreState, Depends(state_dependency(FeatureStoreState))]
