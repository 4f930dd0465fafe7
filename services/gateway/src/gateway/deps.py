"""The gateway's lifespan state, typed, and the dependency that hands it to routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends

from gateway.clients import FeatureStoreClient
from gateway.experiments import ExperimentRuntime
from gateway.ingest import EventIngestor
from gateway.rate_limit import RateLimiter
from gateway.serving import ReadService
from gateway.task_queue import TaskQueue
from recsys_shared.features import FeatureReader
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.web.state import state_dependency

if TYPE_CHECKING:
    # gateway.auth reads this state to check keys, and gateway.config parses keys with
    # gateway.auth: importing either at run time would be circular.
    from gateway.auth import ApiKeys
    from gateway.config import Settings


@dataclass(frozen=True, slots=True)
class GatewayState:
    """Everything the routes use, created once in the lifespan (``gateway.main``)."""

    settings: Settings
    redis: RedisClient
    api_keys: ApiKeys
    rate_limiter: RateLimiter
    features: FeatureReader
    reads: ReadService
    experiments: ExperimentRuntime
    ingestor: EventIngestor
    feature_store: FeatureStoreClient
    tasks: TaskQueue
    registry: ModelRegistry


# Settings come from here too, not from a dependency override: FastAPI re-analyses every
# dependency of every request while any override is registered.
StateDep = Annotated[GatewayState, Depends(state_dependency(GatewayState))]
