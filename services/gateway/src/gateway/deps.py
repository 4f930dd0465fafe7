"""Typed dependencies handed out from the app's lifespan state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.clients import FeatureStoreClient
from gateway.config import Settings
from gateway.ingest import EventIngestor
from gateway.serving import ReadService
from gateway.task_queue import TaskQueue
from recsys_shared.features import FeatureReader
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry


async def _settings(request: Request) -> Settings:
    # From the lifespan state, not a dependency override: FastAPI re-analyses every
    # dependency of every request while any override is registered.
    settings: Settings = request.state.settings
    return settings


async def _redis(request: Request) -> RedisClient:
    client: RedisClient = request.state.redis
    return client


async def _ingestor(request: Request) -> EventIngestor:
    ingestor: EventIngestor = request.state.ingestor
    return ingestor


async def _feature_store(request: Request) -> FeatureStoreClient:
    client: FeatureStoreClient = request.state.feature_store
    return client


async def _tasks(request: Request) -> TaskQueue:
    queue: TaskQueue = request.state.tasks
    return queue


async def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.registry
    return registry


async def _reads(request: Request) -> ReadService:
    reads: ReadService = request.state.reads
    return reads


async def _features(request: Request) -> FeatureReader:
    reader: FeatureReader = request.state.features
    return reader


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[RedisClient, Depends(_redis)]
IngestorDep = Annotated[EventIngestor, Depends(_ingestor)]
FeatureStoreDep = Annotated[FeatureStoreClient, Depends(_feature_store)]
TasksDep = Annotated[TaskQueue, Depends(_tasks)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
FeaturesDep = Annotated[FeatureReader, Depends(_features)]
ReadsDep = Annotated[ReadService, Depends(_reads)]
