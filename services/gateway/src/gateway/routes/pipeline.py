"""Ingestion pipeline status (admin)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.auth import AdminAuth
from gateway.deps import RedisDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared import keys
from recsys_shared.schemas import SnapshotInfo
from recsys_shared.streams import stream_position

router = APIRouter(prefix="/v1", tags=["pipeline"], dependencies=[AdminAuth])


THROUGHPUT_WINDOW_SECONDS = 60


class ThroughputPoint(BaseModel):
    second: int
    accepted: int
    applied: int


class PipelineStatus(BaseModel):
    accepted_per_second: float = Field(
        description=f"Mean over the last {THROUGHPUT_WINDOW_SECONDS} s"
    )
    applied_per_second: float = Field(
        description=f"Mean over the last {THROUGHPUT_WINDOW_SECONDS} s"
    )
    throughput: list[ThroughputPoint]
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
    return await read_pipeline_status(redis)


async def read_pipeline_status(redis: aioredis.Redis) -> PipelineStatus:
    """What ``GET /v1/pipeline`` answers; the status page draws it too."""
    position = await stream_position(redis)
    now = int(time.time())
    seconds = list(range(now - THROUGHPUT_WINDOW_SECONDS, now))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.mget([keys.pipeline_accepted(second) for second in seconds])
        pipe.mget([keys.pipeline_applied(second) for second in seconds])
        pipe.hgetall(keys.PIPELINE_STATS)
        pipe.hgetall(keys.PIPELINE_REJECTS)
        pipe.xlen(keys.DEAD_LETTER_STREAM)
        pipe.get(keys.SNAPSHOT_LATEST)
        pipe.hgetall(keys.CONSUMER_HEARTBEATS)
        accepted, applied, counters, rejects, dead, snapshot, heartbeats = await pipe.execute()
    series = [
        ThroughputPoint(second=second, accepted=int(inn or 0), applied=int(out or 0))
        for second, inn, out in zip(seconds, accepted, applied, strict=True)
    ]
    return PipelineStatus(
        accepted_per_second=sum(point.accepted for point in series) / THROUGHPUT_WINDOW_SECONDS,
        applied_per_second=sum(point.applied for point in series) / THROUGHPUT_WINDOW_SECONDS,
        throughput=series,
        counters={name: int(value) for name, value in counters.items()},
        rejects={name: int(value) for name, value in rejects.items()},
        stream_length=position.length,
        consumer_lag=position.lag,
        pending=position.pending,
        dead_letters=int(dead),
        consumers={name: float(moment) for name, moment in heartbeats.items()},
        last_snapshot=SnapshotInfo.model_validate_json(snapshot) if snapshot else None,
    )
