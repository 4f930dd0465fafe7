"""Where experiments are kept: one slot (``{experiments}``) for their definitions and states;
their counters per partition (``Partition.experiment``): the lists served, added by the
gateways, and the events attributed to them, by the feature-store's apply script (exactly once
each), summed here when read."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from recsys_shared import keys
from recsys_shared.errors import (
    Conflict,
    InvalidInput,
    ModelUnavailable,
    StoreError,
    UnknownExperiment,
    UnknownModelVersion,
)
from recsys_shared.experiments.assignment import group
from recsys_shared.redis import LuaScript, RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import (
    ExperimentIn,
    ExperimentMode,
    ExperimentState,
    ExperimentStep,
    FieldError,
    StoredExperiment,
)

CREATE = LuaScript.load("recsys_shared", "lua/experiment_create.lua")
SAVE_STATE = LuaScript.load("recsys_shared", "lua/experiment_state.lua")


def variant_names(mode: ExperimentMode, count: int) -> list[str]:
    """What the API and the counters call each variant; the first is the control."""
    if mode is ExperimentMode.CANARY:
        return ["control", "canary"]
    if mode is ExperimentMode.SHADOW:
        return ["control", "shadow"]
    return ["control", *(f"treatment-{index}" for index in range(1, count))]


@dataclass(frozen=True)
class Counters:
    """Every counter of an experiment: exposures (per gateway flush) and attributed events
    (summed over the partitions), by field: ``keys.variant_counter`` for a group of a
    variant's users, or ``<variant><suffix>`` for one without groups (a shadow's rankings)."""

    values: dict[str, int]

    def get(self, variant: str, suffix: str) -> int:
        """The variant's count over all its users."""
        return sum(self.groups(variant, suffix))

    def groups(self, variant: str, suffix: str) -> list[int]:
        """The variant's count in each group of its users (ungrouped counts in group 0)."""
        counts = [
            self.values.get(keys.variant_counter(variant, number, suffix), 0)
            for number in range(keys.VARIANT_GROUPS)
        ]
        counts[0] += self.values.get(keys.variant_counter(variant, None, suffix), 0)
        return counts


class ExperimentStore:
    def __init__(self, client: RedisClient, partitions: keys.Partitions) -> None:
        self.redis = client
        self.partitions = partitions

    async def create(
        self,
        request: ExperimentIn,
        registry: ModelRegistry,
        prepare: Callable[[int], Awaitable[None]],
    ) -> StoredExperiment:
        """Start ``request``: 422 for a version that does not exist or cannot be served
        (``prepare`` loads it where it will be served, or raises ``ModelUnavailable``), 409
        while another experiment runs."""
        running = await self.redis.execute("GET", keys.EXPERIMENT_RUNNING)
        if running is not None:
            raise _running_conflict(str(running))
        for index, variant in enumerate(request.variants):
            await _check_servable(registry, index, variant.model_version, prepare)
        now = datetime.now(UTC)
        shares = request.shares()
        state = ExperimentState(
            shares=shares,
            step_started_exposures=[0] * len(shares),
            steps=[ExperimentStep(at=now, shares=shares, note="started")],
        )
        try:
            experiment_id = await self.redis.run(
                CREATE,
                keys=[keys.EXPERIMENT_RUNNING],
                args=[
                    keys.EXPERIMENT_SEQUENCE,
                    keys.EXPERIMENTS,
                    keys.EXPERIMENT_PREFIX,
                    keys.EXPERIMENT_DEFINITION,
                    keys.EXPERIMENT_STATE,
                    request.model_dump_json(),
                    state.model_dump_json(),
                    now.timestamp(),
                ],
            )
        except StoreError as error:
            if error.code == "RUNNING":  # another was created since the check above
                raise _running_conflict(str(error).rpartition(" ")[2]) from error
            raise
        return StoredExperiment(
            id=str(experiment_id), created_at=now, definition=request, state=state
        )

    async def get(self, experiment_id: str) -> StoredExperiment:
        raw, created = await self.redis.execute_many(
            [
                ("HGETALL", keys.experiment(experiment_id)),
                ("ZSCORE", keys.EXPERIMENTS, experiment_id),
            ]
        )
        if not raw:
            raise UnknownExperiment(f"No experiment '{experiment_id}'.")
        return _parse(experiment_id, raw, created)

    async def all(self) -> list[StoredExperiment]:
        """Newest first."""
        listed = await self.redis.execute("ZRANGE", keys.EXPERIMENTS, 0, -1, "WITHSCORES")
        pairs = sorted(_pairs(listed), key=lambda pair: -pair[1])
        rows = await self.redis.execute_many(
            [("HGETALL", keys.experiment(experiment_id)) for experiment_id, _ in pairs]
        )
        return [
            _parse(experiment_id, raw, created)
            for (experiment_id, created), raw in zip(pairs, rows, strict=True)
            if raw
        ]

    async def running(self) -> StoredExperiment | None:
        experiment_id = await self.redis.execute("GET", keys.EXPERIMENT_RUNNING)
        if experiment_id is None:
            return None
        try:
            return await self.get(str(experiment_id))
        except UnknownExperiment:
            return None

    async def save_state(self, experiment_id: str, state: ExperimentState) -> bool:
        """Save a running experiment's new state; False if it had ended meanwhile (a stop
        and a decision racing: the first one saved wins)."""
        ended = state.ended_at is not None
        saved = await self.redis.run(
            SAVE_STATE,
            keys=[keys.EXPERIMENT_RUNNING],
            args=[
                keys.experiment(experiment_id),
                keys.EXPERIMENT_STATE,
                state.model_dump_json(),
                experiment_id,
                "1" if ended else "0",
            ],
        )
        return bool(saved)

    async def add_exposures(self, experiment_id: str, variant: str, user_ids: list[str]) -> None:
        """Count lists served to these users as ``variant`` (each in its user's partition,
        under its user's group)."""
        counts: dict[tuple[str, str], int] = {}
        for user_id in user_ids:
            name = self.partitions.of(user_id).experiment(experiment_id)
            field = keys.variant_counter(
                variant, group(experiment_id, user_id), keys.VARIANT_EXPOSURES
            )
            counts[name, field] = counts.get((name, field), 0) + 1
        await self.redis.execute_many(
            [("HINCRBY", name, field, count) for (name, field), count in counts.items()]
        )

    async def forget(self, experiment_id: str) -> None:
        """Delete an ended experiment and its counters (retention)."""
        await self.redis.execute_many(
            [("DEL", keys.experiment(experiment_id)), ("ZREM", keys.EXPERIMENTS, experiment_id)],
            atomic=True,
        )
        await self.redis.execute_many(
            [("DEL", partition.experiment(experiment_id)) for partition in self.partitions.all]
        )

    async def counters(self, experiment_id: str) -> Counters:
        replies = await self.redis.execute_many(
            [("HGETALL", partition.experiment(experiment_id)) for partition in self.partitions.all]
        )
        totals: dict[str, int] = {}
        for reply in replies:
            for field, value in reply.items():
                totals[field] = totals.get(field, 0) + int(float(value))
        return Counters(totals)


def _running_conflict(experiment_id: str) -> Conflict:
    return Conflict(
        f"Experiment {experiment_id} is running; one experiment runs at a time "
        f"(POST /v1/experiments/{experiment_id}/stop ends it)."
    )


async def _check_servable(
    registry: ModelRegistry,
    index: int,
    version: int,
    prepare: Callable[[int], Awaitable[None]],
) -> None:
    field = f"variants[{index}].model_version"
    try:
        info = await registry.get(version)
    except UnknownModelVersion as error:
        raise _unservable(field, f"model version {version} does not exist", "unknown") from error
    if not info.artifact_url:
        raise _unservable(
            field,
            f"model version {version} has no artifact to serve (pruned, or never written)",
            "unservable",
        )
    try:
        await prepare(version)  # reads it, verifying every file against its checksum
    except ModelUnavailable as error:
        raise _unservable(field, error.detail, "unservable") from error


def _unservable(field: str, message: str, kind: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}.", errors=[FieldError(field=field, message=message, type=kind)]
    )


#: A score as a reply carries it: a float (RESP3) or its text.
_Score = float | str | bytes


def _pairs(
    listed: Mapping[str, _Score] | Iterable[tuple[str, _Score]],
) -> list[tuple[str, float]]:
    """``ZRANGE ... WITHSCORES`` as (member, score) pairs, whether the reply is a map or pairs."""
    pairs = listed.items() if isinstance(listed, Mapping) else listed
    return [(str(name), float(score)) for name, score in pairs]


def _parse(experiment_id: str, raw: dict[str, str], created: _Score | None) -> StoredExperiment:
    return StoredExperiment(
        id=experiment_id,
        created_at=datetime.fromtimestamp(float(created or 0), UTC),
        definition=ExperimentIn.model_validate_json(raw[keys.EXPERIMENT_DEFINITION]),
        state=ExperimentState.model_validate(json.loads(raw[keys.EXPERIMENT_STATE])),
    )
