"""Typed dependencies: what a route needs, handed out from the app's lifespan state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from feature_store.catalogue import Catalogue
from feature_store.config import Settings
from feature_store.erasure import Eraser
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.redis import RedisClient


async def _settings(request: Request) -> Settings:
    # From the lifespan state, not a dependency override: FastAPI re-analyses every
    # dependency of every request while any override is registered.
    settings: Settings = request.state.settings
    return settings


async def _redis(request: Request) -> RedisClient:
    client: RedisClient = request.state.redis
    return client


async def _catalogue(request: Request) -> Catalogue:
    catalogue: Catalogue = request.state.catalogue
    return catalogue


async def _eraser(request: Request) -> Eraser:
    eraser: Eraser = request.state.eraser
    return eraser


async def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.state.store
    return store


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[RedisClient, Depends(_redis)]
CatalogueDep = Annotated[Catalogue, Depends(_catalogue)]
EraserDep = Annotated[Eraser, Depends(_eraser)]
StoreDep = Annotated[ArtifactStore, Depends(_store)]
