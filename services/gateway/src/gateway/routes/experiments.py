"""Online experiments between model versions (admin): start, follow, stop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, status

from gateway.auth import AdminAuth
from gateway.deps import StateDep
from gateway.errors import CONFLICT, NOT_FOUND, PROBLEM_RESPONSES
from recsys_shared.errors import Conflict
from recsys_shared.experiments import decision
from recsys_shared.schemas import DIGITS_PATTERN, Decision, Experiment, ExperimentIn

router = APIRouter(
    prefix="/v1", tags=["experiments"], dependencies=[AdminAuth], responses=PROBLEM_RESPONSES
)

ExperimentId = Annotated[
    str, Path(min_length=1, max_length=20, pattern=DIGITS_PATTERN, description="Experiment id")
]


@router.post(
    "/experiments",
    status_code=status.HTTP_201_CREATED,
    response_model=Experiment,
    summary="Start an experiment between model versions (A/B, canary or shadow)",
    description=(
        "The first variant is the control. `ab`: the weights are traffic shares summing to 1. "
        "`canary`: the second variant's weight is where its schedule starts (default 0.05; "
        "then 25%, 50%, promoted), rolled back as soon as it is significantly worse. `shadow`: "
        "the second variant ranks that share of requests off the response path, never served. "
        "Each version must have a verified artifact (whatever its registry status) and fit the "
        "recommenders' memory bound; one experiment runs at a time (409)."
    ),
    responses=CONFLICT,
)
async def start_experiment(body: ExperimentIn, state: StateDep) -> Experiment:
    runtime = state.experiments
    stored = await runtime.store.create(body, state.registry, state.reads.recommenders.prepare)
    await runtime.refresh()  # this replica assigns from its next request on
    return await runtime.report_now(stored)


@router.get(
    "/experiments",
    response_model=list[Experiment],
    summary="Every experiment kept, newest first, with its figures and decision",
)
async def list_experiments(state: StateDep) -> list[Experiment]:
    runtime = state.experiments
    return [await runtime.report_now(stored) for stored in await runtime.store.all()]


@router.get(
    "/experiments/{experiment_id}",
    response_model=Experiment,
    summary="One experiment: per variant exposures, clicks, conversions, rate and decision",
    responses=NOT_FOUND,
)
async def get_experiment(experiment_id: ExperimentId, state: StateDep) -> Experiment:
    runtime = state.experiments
    return await runtime.report_now(await runtime.store.get(experiment_id))


@router.post(
    "/experiments/{experiment_id}/stop",
    response_model=Experiment,
    summary="Stop a running experiment; the active version stays as it is",
    responses={**NOT_FOUND, **CONFLICT},
)
async def stop_experiment(experiment_id: ExperimentId, state: StateDep) -> Experiment:
    runtime = state.experiments
    stored = await runtime.store.get(experiment_id)
    if stored.state.decision is not Decision.RUNNING:
        raise Conflict(
            f"Experiment {experiment_id} has ended already ({stored.state.decision.value})."
        )
    stopped = decision.stop(stored, datetime.now(UTC), "stopped through the admin API")
    if not await runtime.apply(stored, stopped):
        raise Conflict(f"Experiment {experiment_id} ended (decided) while it was being stopped.")
    return await runtime.report_now(await runtime.store.get(experiment_id))
