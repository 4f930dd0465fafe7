"""Erasing a user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from gateway.auth import AdminAuth
from gateway.deps import StateDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared.schemas import Identifier
from recsys_shared.tasks import ERASE_FROM_ARTIFACTS

router = APIRouter(
    prefix="/v1/users", tags=["users"], dependencies=[AdminAuth], responses=PROBLEM_RESPONSES
)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase everything the system holds of a user",
    description=(
        "Idempotent. When it answers, the user's features, idempotency markers, dead letters, "
        "drift counts, cached lists and served-list records are gone, and no recommender "
        "personalises the user any more; events the user sent before are dropped when they "
        "reach the feature-store. Snapshots and model artifacts are rewritten without the "
        "user in the background (docs/failure-modes.md gives the bound), and later snapshots "
        "and models never contain them."
    ),
)
async def erase_user(
    user_id: Annotated[Identifier, Path(description="User id")],
    state: StateDep,
) -> Response:
    await state.feature_store.erase_user(user_id)
    await state.tasks.send(ERASE_FROM_ARTIFACTS, {})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
