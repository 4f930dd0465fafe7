"""Erasing a user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from gateway.auth import AdminAuth
from gateway.deps import FeatureStoreDep, ReadsDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared.schemas import Identifier

router = APIRouter(prefix="/v1/users", tags=["users"], dependencies=[AdminAuth])


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
    reads: ReadsDep,
) -> Response:
    await feature_store.erase_user(user_id)
    await reads.cache.forget_user(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
