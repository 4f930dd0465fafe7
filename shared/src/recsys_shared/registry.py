"""The model registry: every version's lineage and status, and the pointer to the active one.

A version is a Redis hash: ``info`` (the immutable lineage as JSON) plus the mutable ``status``,
``status_reason`` and ``activated_at``. Activation is one Lua script, so the pointer move, the
status changes and the notification happen together or not at all. Versions only go up: they
come from one counter; rolling back means *activating* an older version, not renumbering.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from recsys_shared import keys
from recsys_shared.errors import Conflict, UnknownModelVersion
from recsys_shared.schemas import ModelInfo

# KEYS: active pointer, the version to activate. ARGV: version, now, reason, model key prefix,
# channel. Returns the previously active version (or false).
_ACTIVATE = """
local info = redis.call('HGET', KEYS[2], 'info')
if not info then return redis.error_reply('UNKNOWN') end
if not redis.call('HGET', KEYS[2], 'artifact') then return redis.error_reply('NOARTIFACT') end
local previous = redis.call('GET', KEYS[1])
if previous and previous ~= ARGV[1] then
  redis.call('HSET', ARGV[4] .. previous, 'status', 'retired',
             'status_reason', 'replaced by version ' .. ARGV[1])
end
redis.call('HSET', KEYS[2], 'status', 'active', 'status_reason', ARGV[3], 'activated_at', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return previous
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ModelRegistry:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._activate = client.register_script(_ACTIVATE)

    async def next_version(self) -> int:
        return int(await self.redis.incr(keys.MODEL_VERSION_SEQUENCE))

    async def record(self, info: ModelInfo) -> None:
        """Store a version's lineage and status (a candidate, or a rejected one with reasons)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._queue_record(pipe, info)
            await pipe.execute()

    async def publish(self, info: ModelInfo, *, reason: str) -> None:
        """Record a version and make it the active one, in one transaction: a crash can leave
        the version unrecorded (and it is trained again), never recorded but not published."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._queue_record(pipe, info)
            await self._activate(
                keys=[keys.MODEL_ACTIVE, keys.model(info.version)],
                args=[info.version, _now(), reason, keys.MODEL_PREFIX, keys.MODEL_EVENTS_CHANNEL],
                client=pipe,
            )
            await pipe.execute()

    @staticmethod
    def _queue_record(pipe: Any, info: ModelInfo) -> None:
        fields = {
            "info": info.model_dump_json(),
            "status": info.status.value,
            "status_reason": info.status_reason or "",
        }
        if info.artifact_url:
            fields["artifact"] = info.artifact_url
        pipe.hset(keys.model(info.version), mapping=fields)
        pipe.zadd(keys.MODELS, {str(info.version): info.version})
        pipe.set(keys.model_for_snapshot(info.snapshot_id), info.version)

    async def drop_artifact(self, version: int) -> None:
        """After garbage collection: the version stays listed but can no longer be activated."""
        await self.redis.hdel(keys.model(version), "artifact")

    async def activate(self, version: int, reason: str) -> int | None:
        """Make ``version`` the one every replica serves; returns the version it replaced."""
        try:
            previous = await self._activate(
                keys=[keys.MODEL_ACTIVE, keys.model(version)],
                args=[version, _now(), reason, keys.MODEL_PREFIX, keys.MODEL_EVENTS_CHANNEL],
            )
        except aioredis.ResponseError as error:
            if "UNKNOWN" in str(error):
                raise UnknownModelVersion(f"Model version {version} does not exist.") from error
            if "NOARTIFACT" in str(error):
                raise Conflict(
                    f"Model version {version} has no artifact (rejected or garbage-collected) "
                    "and cannot be activated."
                ) from error
            raise
        return int(previous) if previous else None

    async def active_version(self) -> int | None:
        raw = await self.redis.get(keys.MODEL_ACTIVE)
        return int(raw) if raw else None

    async def get(self, version: int) -> ModelInfo:
        raw: dict[str, str] = await self.redis.hgetall(keys.model(version))  # type: ignore[assignment]
        if not raw:
            raise UnknownModelVersion(f"Model version {version} does not exist.")
        return _parse(raw)

    async def active(self) -> ModelInfo | None:
        version = await self.active_version()
        return await self.get(version) if version is not None else None

    async def version_for_snapshot(self, snapshot_id: str) -> int | None:
        raw = await self.redis.get(keys.model_for_snapshot(snapshot_id))
        return int(raw) if raw else None

    async def list(self, *, newest_first: bool = True) -> list[ModelInfo]:
        versions: list[str] = await self.redis.zrange(keys.MODELS, 0, -1, desc=newest_first)  # type: ignore[assignment]
        async with self.redis.pipeline(transaction=False) as pipe:
            for version in versions:
                pipe.hgetall(keys.model(int(version)))
            rows = await pipe.execute()
        return [_parse(row) for row in rows if row]


def _parse(raw: dict[str, str]) -> ModelInfo:
    info = json.loads(raw["info"])
    info["status"] = raw.get("status", info.get("status"))
    info["status_reason"] = raw.get("status_reason") or None
    if raw.get("activated_at"):
        info["activated_at"] = raw["activated_at"]
    info["artifact_url"] = raw.get("artifact")
    return ModelInfo.model_validate(info)
