"""Typed dependencies: what a route needs, handed out from the app's lifespan state."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from feature_store.catalogue import Catalogue
from feature_store.config import Settings, get_settings
from recsys_shared.artifacts import ArtifactStore


def _redis(request: Request) -> aioredis.Redis:
    client: aioredis.Redis = request.state.redis
    return client


def _catalogue(request: Request) -> Catalogue:
    catalogue: Catalogue = request.state.catalogue
    return catalogue


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[aioredis.Redis, Depends(_redis)]
CatalogueDep = Annotated[Catalogue, Depends(_catalogue)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
