"""The model registry: every version's lineage and status, and the pointer to the active one.

A version is a Redis hash: ``info`` (the immutable lineage as JSON) plus the mutable status
fields. Activation is one Lua script (``lua/activate.lua``), so the pointer move, the status
changes and the notification happen together or not at all. Versions only go up: they come
from one counter; rolling back means *activating* an older version, not renumbering. Every
registry key carries the ``{models}`` hash tag, so a publish is one transaction on a cluster
too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from recsys_shared import keys
from recsys_shared.errors import Conflict, StoreError, UnknownModelVersion
from recsys_shared.locks import LockLost
from recsys_shared.redis import Arg, LuaScript, RedisClient
from recsys_shared.schemas import ModelInfo

ACTIVATE = LuaScript.load(__package__, "lua/activate.lua")
RECORD = LuaScript.load(__package__, "lua/record_version.lua")
_FIELDS = (
    keys.MODEL_INFO,
    keys.MODEL_ARTIFACT,
    keys.MODEL_STATUS,
    keys.MODEL_STATUS_REASON,
    keys.MODEL_ACTIVATED_AT,
    keys.MODEL_REPLACED_BY,
)
#: Experiment notes kept per version (the newest).
MAX_EXPERIMENT_NOTES = 50

# Why a version became active, as its ``status_reason`` records (the last activation's): the
# drift check's automatic rollback judges promotions only (``retraining_worker.rollback``).
PASSED_THE_GATE = "passed the gate"
ADMIN_ACTIVATION = "activated through the admin API"
_PROMOTED_BY_EXPERIMENT = "promoted by experiment "


def promoted_by_experiment(experiment_id: str, name: str) -> str:
    return f"{_PROMOTED_BY_EXPERIMENT}{experiment_id} ({name})"


def is_promotion(reason: str | None) -> bool:
    """Whether an activation's reason is a promotion: a training's publish, or an experiment's
    (an allow-list: a reason reworded elsewhere stops automatic rollbacks, never starts one)."""
    reason = reason or ""
    return reason == PASSED_THE_GATE or reason.startswith(_PROMOTED_BY_EXPERIMENT)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _activation_args(version: int, reason: str, *, rejected_too: bool = False) -> list[Arg]:
    return [
        version,
        _now(),
        reason,
        keys.MODEL_PREFIX,
        keys.MODEL_EVENTS_CHANNEL,
        *_FIELDS,
        "1" if rejected_too else "0",
    ]


class ModelRegistry:
    def __init__(self, client: RedisClient) -> None:
        self.redis = client

    async def next_version(self) -> int:
        return int(await self.redis.execute("INCR", keys.MODEL_VERSION_SEQUENCE))

    async def record(self, info: ModelInfo, *, fence: str | None = None) -> None:
        """Store a version's lineage and status (a candidate, or a rejected one with reasons).
        ``fence`` is the training lock's token: the record is refused (:class:`LockLost`)
        unless the lock is still that holder's."""
        await self._fenced(_record_command(info, fence))

    async def publish(self, info: ModelInfo, *, reason: str, fence: str | None = None) -> None:
        """Record a version and make it the active one, in one transaction: a crash can leave
        the version unrecorded (and it is trained again), never recorded but not published.
        A record refused by its ``fence`` leaves the new version unknown to the activation
        after it, so nothing of the transaction is written."""
        activate: list[Arg] = [
            "EVAL",
            ACTIVATE.source,
            2,
            keys.MODEL_ACTIVE,
            keys.model(info.version),
            *_activation_args(info.version, reason),
        ]
        await self._fenced(_record_command(info, fence), activate)

    async def _fenced(self, *commands: list[Arg]) -> None:
        try:
            await self.redis.execute_many(commands, atomic=True)
        except StoreError as error:
            if error.code == "LOCKLOST":
                raise LockLost(
                    "The training lock is no longer this training's; nothing was recorded."
                ) from error
            raise

    async def drop_artifact(self, version: int) -> None:
        """After garbage collection: the version stays listed but can no longer be activated."""
        await self.redis.execute("HDEL", keys.model(version), keys.MODEL_ARTIFACT)

    async def set_checksum(self, version: int, checksum: str) -> None:
        """After an artifact was rewritten (users erased from it): its new checksum."""
        info = await self.get(version)
        info.checksum = checksum
        await self.redis.execute("HSET", keys.model(version), keys.MODEL_INFO, _lineage_json(info))

    async def activate(
        self, version: int, reason: str, *, rejected_too: bool = False
    ) -> int | None:
        """Make ``version`` the one every replica serves; returns the version it replaced.
        A version the offline gate rejected is refused unless ``rejected_too`` (an online
        experiment found it better)."""
        try:
            previous = await self.redis.run(
                ACTIVATE,
                keys=[keys.MODEL_ACTIVE, keys.model(version)],
                args=_activation_args(version, reason, rejected_too=rejected_too),
            )
        except StoreError as error:
            if error.code == "UNKNOWN":
                raise UnknownModelVersion(f"Model version {version} does not exist.") from error
            if error.code == "NOARTIFACT":
                raise Conflict(
                    f"Model version {version} has no artifact (rejected or garbage-collected) "
                    "and cannot be activated."
                ) from error
            if error.code == "REJECTED":
                raise Conflict(
                    f"Model version {version} was rejected by the offline gate; only an "
                    "online experiment that finds it better can activate it."
                ) from error
            raise
        return int(previous) if previous else None

    async def note_experiment(self, version: int, note: str) -> None:
        """Add to the version's lineage what an experiment did with it (a step, a decision)."""
        name = keys.model(version)
        raw = await self.redis.execute("HGET", name, keys.MODEL_EXPERIMENTS)
        notes: list[str] = json.loads(raw) if raw else []
        notes = [*notes, f"{_now()} {note}"][-MAX_EXPERIMENT_NOTES:]
        # Read, then written: the decider (under its lock) and an admin's stop write notes, so
        # two at once can lose one (notes are lineage, not state); a version pruned meanwhile is
        # not brought back as a hash of notes alone.
        if await self.redis.execute("EXISTS", name):
            await self.redis.execute("HSET", name, keys.MODEL_EXPERIMENTS, json.dumps(notes))

    async def active_version(self) -> int | None:
        raw = await self.redis.execute("GET", keys.MODEL_ACTIVE)
        return int(raw) if raw else None

    async def get(self, version: int) -> ModelInfo:
        raw: dict[str, str] = await self.redis.execute("HGETALL", keys.model(version))
        if not raw:
            raise UnknownModelVersion(f"Model version {version} does not exist.")
        return _parse(raw)

    async def active(self) -> ModelInfo | None:
        version = await self.active_version()
        return await self.get(version) if version is not None else None

    async def version_for_snapshot(self, snapshot_id: str) -> int | None:
        raw = await self.redis.execute("GET", keys.model_for_snapshot(snapshot_id))
        return int(raw) if raw else None

    async def versions(self, *, newest_first: bool = True) -> list[int]:
        listed: list[str] = await self.redis.execute("ZRANGE", keys.MODELS, 0, -1)
        numbers = [int(version) for version in listed]
        return sorted(numbers, reverse=newest_first)

    async def list(self, *, newest_first: bool = True) -> list[ModelInfo]:
        versions = await self.versions(newest_first=newest_first)
        rows = await self.redis.execute_many(
            [("HGETALL", keys.model(version)) for version in versions]
        )
        return [_parse(row) for row in rows if row]

    async def forget(self, version: int, snapshot_id: str) -> None:
        """Remove a version from the registry entirely (pruning beyond what rollback needs)."""
        await self.redis.execute_many(
            [
                ("DEL", keys.model(version)),
                ("ZREM", keys.MODELS, version),
                ("DEL", keys.model_for_snapshot(snapshot_id)),
            ],
            atomic=True,
        )


def _lineage_json(info: ModelInfo) -> str:
    # The mutable fields live in their own hash fields; the lineage is what never changes.
    return info.model_dump_json(
        exclude={
            "status",
            "status_reason",
            "activated_at",
            "artifact_url",
            "replaced_by",
            "experiment_notes",
        }
    )


def _record_command(info: ModelInfo, fence: str | None) -> list[Arg]:
    fields: list[Arg] = [
        keys.MODEL_INFO,
        _lineage_json(info),
        keys.MODEL_STATUS,
        info.status.value,
        keys.MODEL_STATUS_REASON,
        info.status_reason or "",
    ]
    if info.artifact_url:
        fields += [keys.MODEL_ARTIFACT, info.artifact_url]
    record_keys = (
        keys.model(info.version),
        keys.MODELS,
        keys.model_for_snapshot(info.snapshot_id),
        keys.TRAINING_LOCK,
    )
    arguments: list[Arg] = [fence or "", info.version, *fields]
    return ["EVAL", RECORD.source, len(record_keys), *record_keys, *arguments]


def _parse(raw: dict[str, str]) -> ModelInfo:
    info: dict[str, Any] = json.loads(raw[keys.MODEL_INFO])
    info["status"] = raw.get(keys.MODEL_STATUS, info.get("status"))
    info["status_reason"] = raw.get(keys.MODEL_STATUS_REASON) or None
    if raw.get(keys.MODEL_ACTIVATED_AT):
        info["activated_at"] = raw[keys.MODEL_ACTIVATED_AT]
    if raw.get(keys.MODEL_REPLACED_BY):
        info["replaced_by"] = int(raw[keys.MODEL_REPLACED_BY])
    info["artifact_url"] = raw.get(keys.MODEL_ARTIFACT)
    info["experiment_notes"] = json.loads(raw.get(keys.MODEL_EXPERIMENTS) or "[]")
    return ModelInfo.model_validate(info)
