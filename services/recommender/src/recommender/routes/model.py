"""What this replica serves, for operators and tests."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

router = APIRouter(tags=["model"])


class ServingStatus(BaseModel):
    serving_version: int | None
    active_version: int | None
    last_error: str | None


@router.get(
    "/model", response_model=ServingStatus, summary="The version in memory and any load error"
)
async def serving_status(request: Request) -> ServingStatus:
    holder = request.state.holder
    return ServingStatus(
        serving_version=holder.serving_version,
        active_version=holder.active_version,
        last_error=holder.last_error,
    )
