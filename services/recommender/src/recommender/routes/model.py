"""What this replica serves, for operators and tests."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from recommender.variants import VariantModels, resident_bytes

router = APIRouter(tags=["model"])


class ServingStatus(BaseModel):
    serving_version: int | None
    active_version: int | None
    last_error: str | None
    variant_versions: list[int] = []
    memory_bytes: int = 0


class PreparedVersion(BaseModel):
    version: int
    memory_bytes: int


@router.get(
    "/model", response_model=ServingStatus, summary="The version in memory and any load error"
)
async def serving_status(request: Request) -> ServingStatus:
    holder = request.state.holder
    variants: VariantModels = request.state.variants
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
async def prepare_version(version: int, request: Request) -> PreparedVersion:
    variants: VariantModels = request.state.variants
    model = await variants.prepare(version)
    return PreparedVersion(version=version, memory_bytes=resident_bytes(model))
