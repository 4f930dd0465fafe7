"""User erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from feature_store.deps import StateDep
from recsys_shared.schemas import Identifier

router = APIRouter(prefix="/users", tags=["users"])


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase everything the data tier holds of a user (idempotent)",
)
async def erase_user(
    user_id: Annotated[Identifier, Path(description="User id")], state: StateDep
) -> Response:
    await state.eraser.erase(user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
