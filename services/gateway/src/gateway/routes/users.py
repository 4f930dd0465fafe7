"""Erasing a user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from gateway.auth import AdminAuth
from gateway.deps import FeatureStoreDep, RedisDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared import keys
from recsys_shared.schemas import Identifier

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[AdminAuth])


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase a user's history, features and cached results",
    description="Idempotent. Training snapshots taken after this no longer contain the user.",
    responses=PROBLEM_RESPONSES,
)
async def erase_user(
    user_id: Annotated[Identifier, Path(description="User id")],
    feature_store: FeatureStoreDep,
    redis: RedisDep,
) -> Response:
    await feature_store.erase_user(user_id)
    pattern = _glob_escape(keys.cache_user_prefix(user_id)) + "*"
    batch: list[str] = []
    async for key in redis.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.delete(*batch)
            batch = []
    if batch:
        await redis.delete(*batch)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
