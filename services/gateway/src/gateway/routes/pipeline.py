"""Ingestion pipeline status (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from recsys_shared import keys
from recsys_shared.schemas import SnapshotInfo
from recsys_shared.streams import stream_position

from gateway.auth import AdminAuth
from gateway.deps import RedisDep
from gateway.errors import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["pipeline"], dependencies=[AdminAuth])


class PipelineStatus(BaseModel):
    counters: dict[str, int]
    rejects: dict[str, int]
    stream_length: int
    consumer_lag: int
    pending: int
    dead_letters: int
    consumers: dict[str, float]
    last_snapshot: SnapshotInfo | None


@router.get(
    "/pipeline",
    response_model=PipelineStatus,
    summary="Ingestion counters, lag, dead letters, last snapshot",
    responses=PROBLEM_RESPONSES,
)
async def pipeline_status(redis: RedisDep) -> PipelineStatus:
    position = await stream_position(redis)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.PIPELINE_STATS)
        pipe.hgetall(keys.PIPELINE_REJECTS)
        pipe.xlen(keys.DEAD_LETTER_STREAM)
        pipe.get(keys.SNAPSHOT_LATEST)
        pipe.hgetall(keys.CONSUMER_HEARTBEATS)
        counters, rejects, dead, snapshot, heartbeats = await pipe.execute()
    return PipelineStatus(
        counters={name: int(value) for name, value in counters.items()},
        rejects={name: int(value) for name, value in rejects.items()},
        stream_length=position.length,
        consumer_lag=position.lag,
        pending=position.pending,
        dead_letters=int(dead),
        consumers={name: float(moment) for name, moment in heartbeats.items()},
        last_snapshot=SnapshotInfo.model_validate_json(snapshot) if snapshot else None,
    )
