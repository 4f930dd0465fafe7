"""Training snapshots, asked for by the retraining-worker."""

from __future__ import annotations

from fastapi import APIRouter

from feature_store.deps import StateDep
from feature_store.snapshots import take_snapshot
from recsys_shared import keys
from recsys_shared.errors import NotFound
from recsys_shared.schemas import SnapshotInfo

router = APIRouter(prefix="/snapshots", tags=["snapshots"])


@router.post(
    "", response_model=SnapshotInfo, summary="Export (or find) the snapshot of the current data"
)
async def create_snapshot(state: StateDep) -> SnapshotInfo:
    return await take_snapshot(state.redis, state.store, state.settings)


@router.get(
    "/latest", response_model=SnapshotInfo, summary="The last snapshot and its quality report"
)
async def latest_snapshot(state: StateDep) -> SnapshotInfo:
    raw = await state.redis.execute("GET", keys.SNAPSHOT_LATEST)
    if raw is None:
        raise NotFound("No snapshot has been taken yet.")
    return SnapshotInfo.model_validate_json(raw)
