"""Drift monitoring (admin): the reports of the retraining-worker's drift monitor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from gateway.auth import AdminAuth
from gateway.deps import StateDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared import keys
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import DECIMAL_DIGITS, DriftOverview, DriftReport, TaskAccepted
from recsys_shared.tasks import CHECK_DRIFT

router = APIRouter(
    prefix="/v1", tags=["drift"], dependencies=[AdminAuth], responses=PROBLEM_RESPONSES
)


@router.get(
    "/drift",
    response_model=DriftOverview,
    summary="The latest drift report and the history of checks, newest first",
)
async def drift(
    state: StateDep,
    limit: Annotated[
        int,
        Query(ge=1, le=keys.DRIFT_HISTORY_LENGTH, description="History entries returned"),
        DECIMAL_DIGITS,
    ] = keys.DRIFT_HISTORY_LENGTH,
) -> DriftOverview:
    return await read_drift(state.redis, limit)


async def read_drift(client: RedisClient, limit: int) -> DriftOverview:
    """What ``GET /v1/drift`` answers; the status page draws it too."""
    latest, history = await client.execute_many(
        [("GET", keys.DRIFT_LATEST), ("LRANGE", keys.DRIFT_HISTORY, 0, limit - 1)]
    )
    return DriftOverview(
        latest=DriftReport.model_validate_json(latest) if latest else None,
        history=[DriftReport.model_validate_json(entry) for entry in history],
    )


@router.post(
    "/drift/check",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Run a drift check now; follow it with GET /v1/tasks/{task_id}",
)
async def check(state: StateDep) -> TaskAccepted:
    return TaskAccepted(task_id=await state.tasks.send(CHECK_DRIFT, {}))
