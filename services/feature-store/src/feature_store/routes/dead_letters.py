"""Dead letters: listed by reason, replayed into the events streams (admin, via the gateway)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from feature_store import dead_letters
from feature_store.deps import StateDep
from recsys_shared.schemas import DECIMAL_DIGITS, DeadLetters, ReplayRequest, ReplayResult

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


@router.get("", response_model=DeadLetters, summary="Dead letters, newest first, counted by reason")
async def list_dead_letters(
    state: StateDep,
    reason: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000), DECIMAL_DIGITS] = 100,
) -> DeadLetters:
    return await dead_letters.list_dead_letters(
        state.redis, state.settings.partitions.all, reason=reason, limit=limit
    )


@router.post("/replay", response_model=ReplayResult, summary="Put dead letters back in the streams")
async def replay_dead_letters(request: ReplayRequest, state: StateDep) -> ReplayResult:
    return await dead_letters.replay(
        state.redis, state.settings.partitions.all, reason=request.reason, limit=request.limit
    )
