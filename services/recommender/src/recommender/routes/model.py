"""What this replica serves, for operators and tests."""

from __future__ import annotations

from fastapi import APIRouter

from recommender.deps import StateDep
from recommender.variants import resident_bytes
from recsys_shared.schemas import PreparedVersion, ServingStatus

router = APIRouter(tags=["model"])


@router.get(
    "/model", response_model=ServingStatus, summary="The version in memory and any load error"
)
async def serving_status(state: StateDep) -> ServingStatus:
    holder, variants = state.holder, state.variants
    return ServingStatus(
        serving_version=holder.serving_version,
        active_version=holder.active_version,
        last_error=holder.last_error,
        variant_versions=sorted(variants.held),
        memory_bytes=variants.memory_bytes(),
    )


@router.post(
    "/models/{version}/prepare",
    response_model=PreparedVersion,
    summary="Load a version beside the active one (an experiment's variant)",
    description="Verifies the artifact's checksums and the memory bound, then holds the "
    "version; 503 (model-unavailable) names what is wrong. The gateway calls it before an "
    "experiment starts.",
)
async def prepare_version(version: int, state: StateDep) -> PreparedVersion:
    model = await state.variants.prepare(version)
    return PreparedVersion(version=version, memory_bytes=resident_bytes(model))
