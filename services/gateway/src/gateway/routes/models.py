"""The model registry and retraining (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, status

from gateway.auth import AdminAuth
from gateway.deps import StateDep
from gateway.errors import CONFLICT, NOT_FOUND, PROBLEM_RESPONSES
from recsys_shared.errors import Conflict, NotFound
from recsys_shared.registry import ADMIN_ACTIVATION
from recsys_shared.schemas import (
    DECIMAL_DIGITS,
    TASK_ID_PATTERN,
    ModelInfo,
    ModelStatus,
    RetrainRequest,
    TaskAccepted,
    TaskState,
)
from recsys_shared.tasks import TRAIN_MODEL

router = APIRouter(
    prefix="/v1", tags=["models"], dependencies=[AdminAuth], responses=PROBLEM_RESPONSES
)


@router.get(
    "/models",
    response_model=list[ModelInfo],
    summary="Every model version, newest first",
)
async def list_models(state: StateDep) -> list[ModelInfo]:
    return await state.registry.list()


@router.get(
    "/models/active",
    response_model=ModelInfo,
    summary="The version being served",
    responses=NOT_FOUND,
)
async def active_model(state: StateDep) -> ModelInfo:
    active = await state.registry.active()
    if active is None:
        raise NotFound("No model has been published yet; POST /v1/models/retrain trains one.")
    return active


@router.post(
    "/models/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    summary="Train a new version now; follow it with GET /v1/tasks/{task_id}",
)
async def retrain(
    state: StateDep, request: Annotated[RetrainRequest | None, Body()] = None
) -> TaskAccepted:
    options = request or RetrainRequest()
    task_id = await state.tasks.send(TRAIN_MODEL, options.model_dump(exclude_none=True))
    return TaskAccepted(task_id=task_id)


@router.post(
    "/models/{version}/activate",
    response_model=ModelInfo,
    summary="Serve this version: promote a candidate or roll back to an earlier one",
    responses={**NOT_FOUND, **CONFLICT},
)
async def activate(
    version: Annotated[int, Path(ge=1, le=2**53, description="Model version"), DECIMAL_DIGITS],
    state: StateDep,
) -> ModelInfo:
    registry = state.registry
    info = await registry.get(version)
    if info.status is ModelStatus.REJECTED:
        raise Conflict(f"Version {version} was rejected by the gate ({info.status_reason}).")
    await registry.activate(version, reason=ADMIN_ACTIVATION)
    return await registry.get(version)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskState,
    summary="State and result of an enqueued task",
    responses=NOT_FOUND,
)
async def task_state(
    task_id: Annotated[str, Path(min_length=1, max_length=64, pattern=TASK_ID_PATTERN)],
    state: StateDep,
) -> TaskState:
    return await state.tasks.state(task_id)
