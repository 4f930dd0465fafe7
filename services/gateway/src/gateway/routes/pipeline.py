"""Ingestion pipeline status (admin)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated

from fastapi import APIRouter, Query

from gateway.auth import AdminAuth
from gateway.deps import StateDep
from gateway.errors import PROBLEM_RESPONSES
from recsys_shared import keys
from recsys_shared.redis import RedisClient
from recsys_shared.schemas import (
    DECIMAL_DIGITS,
    THROUGHPUT_WINDOW_SECONDS,
    DeadLetters,
    PipelineStatus,
    ReplayRequest,
    ReplayResult,
    SnapshotInfo,
    ThroughputPoint,
)
from recsys_shared.streams import pipeline_position

router = APIRouter(
    prefix="/v1", tags=["pipeline"], dependencies=[AdminAuth], responses=PROBLEM_RESPONSES
)


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
    totals = _Totals(list(range(now - THROUGHPUT_WINDOW_SECONDS, now)))
    commands: list[tuple[str | int, ...]] = [
        ("HGETALL", keys.PIPELINE_REJECTS),
        ("GET", keys.PIPELINE_REJECTED),
        ("GET", keys.SNAPSHOT_LATEST),
    ]
    per_partition = [totals.commands(partition) for partition in partitions.all]
    replies = await redis.execute_many(commands + [c for batch in per_partition for c in batch])
    rejects, rejected, snapshot = replies[: len(commands)]
    start = len(commands)
    for batch in per_partition:  # each partition's replies, in the order of its commands
        totals.add(*replies[start : start + len(batch)])
        start += len(batch)
    totals.counters["rejected"] = int(rejected or 0)
    return PipelineStatus(
        accepted_per_second=sum(totals.accepted) / THROUGHPUT_WINDOW_SECONDS,
        applied_per_second=sum(totals.applied) / THROUGHPUT_WINDOW_SECONDS,
        throughput=totals.series(),
        counters=totals.counters,
        rejects={name: int(value) for name, value in rejects.items()},
        partitions=partitions.count,
        stream_length=position.length,
        consumer_lag=position.lag,
        pending=position.pending,
        dead_letters=totals.dead_letters,
        consumers=totals.consumers,
        last_snapshot=SnapshotInfo.model_validate_json(snapshot) if snapshot else None,
    )


class _Totals:
    """The partitions' counters, dead letters, consumers' heartbeats and per-second counts
    over ``seconds``, summed as each partition's replies come in."""

    def __init__(self, seconds: list[int]) -> None:
        self.seconds = seconds
        self.counters: dict[str, int] = dict.fromkeys(keys.PARTITION_COUNTERS, 0)
        self.consumers: dict[str, float] = {}
        self.accepted = [0] * len(seconds)
        self.applied = [0] * len(seconds)
        self.dead_letters = 0

    def commands(self, partition: keys.Partition) -> list[tuple[str | int, ...]]:
        return [
            ("HGETALL", partition.stats),
            ("XLEN", partition.dead_letters),
            ("HGETALL", partition.heartbeats),
            ("MGET", *(partition.accepted(second) for second in self.seconds)),
            ("MGET", *(partition.applied(second) for second in self.seconds)),
        ]

    def add(
        self,
        stats: Mapping[str, str],
        dead_count: int,
        heartbeats: Mapping[str, str],
        ins: Sequence[str | None],
        outs: Sequence[str | None],
    ) -> None:
        """One partition's replies, in the order of :meth:`commands`."""
        for name, value in stats.items():
            self.counters[name] = self.counters.get(name, 0) + int(value)
        self.dead_letters += int(dead_count)
        for name, moment in heartbeats.items():
            self.consumers[name] = max(self.consumers.get(name, 0.0), float(moment))
        self.accepted = [a + int(n or 0) for a, n in zip(self.accepted, ins, strict=True)]
        self.applied = [a + int(n or 0) for a, n in zip(self.applied, outs, strict=True)]

    def series(self) -> list[ThroughputPoint]:
        return [
            ThroughputPoint(second=second, accepted=inn, applied=out)
            for second, inn, out in zip(self.seconds, self.accepted, self.applied, strict=True)
        ]


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
    limit: Annotated[
        int, Query(ge=1, le=1000, description="Entries returned"), DECIMAL_DIGITS
    ] = 100,
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
