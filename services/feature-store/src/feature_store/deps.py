"""Typed dependencies: what a route needs, handed out from the app's lifespan state."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from feature_store.catalogue import Catalogue
from feature_store.config import Settings
from recsys_shared.artifacts import ArtifactStore


async def _settings(request: Request) -> Settings:
    # From the lifespan state, not a dependency override: FastAPI re-analyses every
    # dependency of every request while any override is registered.
    settings: Settings = request.state.settings
    return settings


async def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.state.redis
    return client


async def _catalogue(request: Request) -> Catalogue:
    catalogue: Catalogue = request.state.catalogue
    return catalogue


async def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.state.store
    return store


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[aioredis.Redis, Depends(_redis)]
CatalogueDep = Annotated[Catalogue, Depends(_catalogue)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
