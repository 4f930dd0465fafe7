"""Typed dependencies handed out from the app's lifespan state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from recommender.service import RecommendationService


async def _service(request: Request) -> RecommendationService:
    service: RecommendationService = request.state.service
    return service


ServiceDep = Annotated[RecommendationService, Depends(_service)]
