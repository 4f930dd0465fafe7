"""Ingestion pipeline status (admin)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gateway.auth import AdminAuth
from gateway.deps import StateDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared import keys
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import DeadLetters, ReplayRequest, ReplayResult, SnapshotInfo
from recsys_shared.streams import pipeline_position

router = APIRouter(
    prefix="/v1", tags=["pipeline"], dependencies=[AdminAuth], responses=PROBLEM_RESPONSES
)


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
    counters: dict[str, int] = Field(
        description="Totals over every partition: accepted, duplicates, applied, redelivered, "
        "dead_letters, erased; rejected (refused at the door)."
    )
    rejects: dict[str, int] = Field(description="Problems found in refused batches, by kind.")
    partitions: int
    stream_length: int = Field(description="Entries kept in the streams, every partition.")
    consumer_lag: int = Field(description="Events accepted and not yet applied.")
    pending: int = Field(description="Events delivered to a consumer and not yet applied.")
    dead_letters: int
    consumers: dict[str, float] = Field(
        description="Each consumer's last completed read (the latest over its partitions)."
    )
    last_snapshot: SnapshotInfo | None


@router.get(
    "/pipeline",
    response_model=PipelineStatus,
    summary="Ingestion counters, lag, dead letters, last snapshot",
)
async def pipeline_status(state: StateDep) -> PipelineStatus:
    return await read_pipeline_status(state.redis, state.settings.partitions)


async def read_pipeline_status(redis: RedisClient, partitions: keys.Partitions) -> PipelineStatus:
    """What ``GET /v1/pipeline`` answers, summed over the partitions; the status page draws
    it too."""
    position = await pipeline_position(redis, partitions.all)
    now = int(time.time())
    seconds = list(range(now - THROUGHPUT_WINDOW_SECONDS, now))
    commands: list[tuple[str | int, ...]] = [
        ("HGETALL", keys.PIPELINE_REJECTS),
        ("GET", keys.PIPELINE_REJECTED),
        ("GET", keys.SNAPSHOT_LATEST),
    ]
    for partition in partitions.all:
        commands += [
            ("HGETALL", partition.stats),
            ("XLEN", partition.dead_letters),
            ("HGETALL", partition.heartbeats),
            ("MGET", *(partition.accepted(second) for second in seconds)),
            ("MGET", *(partition.applied(second) for second in seconds)),
        ]
    rejects, rejected, snapshot, *per_partition = await redis.execute_many(commands)
    counters: dict[str, int] = dict.fromkeys(keys.PARTITION_COUNTERS, 0)
    consumers: dict[str, float] = {}
    accepted = [0] * len(seconds)
    applied = [0] * len(seconds)
    dead = 0
    for index in range(0, len(per_partition), 5):
        stats, dead_count, heartbeats, ins, outs = per_partition[index : index + 5]
        for name, value in stats.items():
            counters[name] = counters.get(name, 0) + int(value)
        dead += int(dead_count)
        for name, moment in heartbeats.items():
            consumers[name] = max(consumers.get(name, 0.0), float(moment))
        accepted = [total + int(value or 0) for total, value in zip(accepted, ins, strict=True)]
        applied = [total + int(value or 0) for total, value in zip(applied, outs, strict=True)]
    counters["rejected"] = int(rejected or 0)
    series = [
        ThroughputPoint(second=second, accepted=inn, applied=out)
        for second, inn, out in zip(seconds, accepted, applied, strict=True)
    ]
    return PipelineStatus(
        accepted_per_second=sum(accepted) / THROUGHPUT_WINDOW_SECONDS,
        applied_per_second=sum(applied) / THROUGHPUT_WINDOW_SECONDS,
        throughput=series,
        counters=counters,
        rejects={name: int(value) for name, value in rejects.items()},
        partitions=partitions.count,
        stream_length=position.length,
        consumer_lag=position.lag,
        pending=position.pending,
        dead_letters=dead,
        consumers=consumers,
        last_snapshot=SnapshotInfo.model_validate_json(snapshot) if snapshot else None,
    )


@router.get(
    "/pipeline/dead-letters",
    response_model=DeadLetters,
    summary="Events the feature-store could not apply, newest first, counted by reason",
)
async def dead_letters(
    state: StateDep,
    reason: Annotated[
        str | None, Query(min_length=1, max_length=64, description="Only this reason")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries returned")] = 100,
) -> DeadLetters:
    return await state.feature_store.dead_letters(reason=reason, limit=limit)


@router.post(
    "/pipeline/dead-letters/replay",
    response_model=ReplayResult,
    summary="Put dead letters back into the events streams, to be applied again",
    description="An event that still cannot be applied comes back as a dead letter.",
)
async def replay_dead_letters(
    state: StateDep, request: ReplayRequest | None = None
) -> ReplayResult:
    return await state.feature_store.replay_dead_letters(request or ReplayRequest())
