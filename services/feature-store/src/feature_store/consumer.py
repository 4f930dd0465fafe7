"""The events-stream consumer: reads through a consumer group, applies, dead-letters, trims.

Delivery is at-least-once (a crash between read and acknowledgement redelivers); the applier makes
the effect exactly-once. Replicas share the stream through one consumer group; entries a crashed
replica left pending are claimed with XAUTOCLAIM once idle for ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from feature_store import metrics
from feature_store.applier import EventApplier
from feature_store.config import Settings
from recsys_shared import keys
from recsys_shared import metrics as shared_metrics
from recsys_shared.redis import REDIS_UNAVAILABLE_ERRORS
from recsys_shared.schemas import StoredEvent
from recsys_shared.streams import stream_position

log = logging.getLogger(__name__)

_RETRY_DELAY_SECONDS = 0.5


class StreamConsumer:
    def __init__(
        self, client: aioredis.Redis, settings: Settings, *, records: aioredis.Redis | None = None
    ) -> None:
        self.redis = client
        self.settings = settings
        self.name = settings.consumer_name
        self.applier = EventApplier(
            client,
            history_cap=settings.history_cap,
            half_life_days=settings.popularity_half_life_days,
            records=records,
        )
        self.last_batch_at: float = 0.0
        # A blocking read must end before the socket timeout, or every idle read is an error.
        self._block_ms = min(
            settings.consumer_block_ms, int(settings.redis_timeout_seconds * 1000 / 2)
        )
        self._stopping = asyncio.Event()
        self._next_claim = 0.0
        self._next_trim = 0.0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until stopped; survives Redis outages by waiting and trying again."""
        await self._ensure_group()
        backlog_done = False
        while not self._stopping.is_set():
            try:
                if not backlog_done:
                    # After a restart under the same name, our own pending entries come first.
                    backlog_done = await self.consume_once(own_pending=True) == 0
                else:
                    await self.consume_once()
                await self._housekeeping()
            except REDIS_UNAVAILABLE_ERRORS as error:
                log.warning("stream consumer waiting for redis: %s", type(error).__name__)
                shared_metrics.REDIS_ERRORS.labels(type(error).__name__).inc()
                # A batch read before the outage may not have been applied: once Redis is
                # back, our own pending entries come first again, not after a claim timeout.
                backlog_done = False
                await asyncio.sleep(_RETRY_DELAY_SECONDS)
            except aioredis.ResponseError as error:
                # NOGROUP: the next read after the stream is gone; UNBLOCKED: Redis 7 ends a
                # blocked XREADGROUP with it when the stream is deleted during the read.
                if not str(error).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # Redis lost the stream (flushed, or restarted without persistence).
                await self._ensure_group()

    async def _ensure_group(self) -> None:
        while not self._stopping.is_set():
            try:
                with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: already there
                    await self.redis.xgroup_create(
                        keys.EVENTS_STREAM, keys.EVENTS_GROUP, id="0", mkstream=True
                    )
                return
            except REDIS_UNAVAILABLE_ERRORS:
                await asyncio.sleep(_RETRY_DELAY_SECONDS)

    async def consume_once(self, *, own_pending: bool = False) -> int:
        """Read one batch (new entries, or with ``own_pending`` our unacknowledged ones)."""
        response = await self.redis.xreadgroup(
            keys.EVENTS_GROUP,
            self.name,
            {keys.EVENTS_STREAM: "0" if own_pending else ">"},
            count=self.settings.consumer_batch_size,
            block=None if own_pending else self._block_ms,
        )
        entries: list[tuple[str, dict[str, str] | None]] = response[0][1] if response else []  # type: ignore[index,assignment]
        await self.process(entries)
        await self._heartbeat()
        return len(entries)

    async def process(self, entries: list[tuple[str, dict[str, str] | None]]) -> None:
        if not entries:
            return
        started = time.perf_counter()
        valid: list[tuple[str, StoredEvent]] = []
        dead: list[tuple[str, dict[str, Any], str]] = []
        for stream_id, fields in entries:
            # Trimmed away while pending: nothing left to apply. redis-py returns the entry with
            # empty fields ({}); a live entry always has at least one field.
            if not fields:
                dead.append((stream_id, {}, "entry_deleted"))
                continue
            try:
                valid.append((stream_id, StoredEvent.model_validate_json(fields.get("e", ""))))
            except ValidationError as error:
                dead.append((stream_id, fields, f"invalid_event: {error.errors()[0]['msg']}"))
        result = await self.applier.apply(valid, now=time.time())
        if dead:
            await self._dead_letter(dead)
        metrics.EVENTS_APPLIED.inc(result.applied)
        metrics.EVENTS_REDELIVERED.inc(result.duplicates)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _dead_letter(self, dead: list[tuple[str, dict[str, Any], str]]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for stream_id, fields, reason in dead:
                pipe.xadd(
                    keys.DEAD_LETTER_STREAM,
                    {"stream_id": stream_id, "reason": reason, "entry": str(fields.get("e", ""))},
                    maxlen=100_000,
                    approximate=True,
                )
                pipe.xack(keys.EVENTS_STREAM, keys.EVENTS_GROUP, stream_id)
            pipe.hincrby(keys.PIPELINE_STATS, "dead_letters", len(dead))
            await pipe.execute()
        for _, _, reason in dead:
            metrics.DEAD_LETTERS.labels(reason.split(":", 1)[0]).inc()
        log.warning("moved %d event(s) to the dead-letter stream", len(dead))

    async def claim_stalled(self) -> int:
        """Take over entries another consumer has left pending for too long."""
        claimed_total = 0
        cursor = "0-0"
        while True:
            cursor, claimed, *_ = await self.redis.xautoclaim(
                keys.EVENTS_STREAM,
                keys.EVENTS_GROUP,
                self.name,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=cursor,
                count=self.settings.consumer_batch_size,
            )
            await self.process([(entry_id, fields) for entry_id, fields in claimed])
            claimed_total += len(claimed)
            if cursor == "0-0" or not claimed:
                break
        if claimed_total:
            metrics.EVENTS_CLAIMED.inc(claimed_total)
            log.info("claimed %d stalled event(s)", claimed_total)
        return claimed_total

    async def trim(self) -> None:
        """Drop entries every group has applied; nothing unapplied is ever trimmed."""
        position = await stream_position(self.redis)
        metrics.STREAM_LAG.set(position.lag)
        metrics.STREAM_LENGTH.set(position.length)
        if position.groups:
            await self.redis.xtrim(
                keys.EVENTS_STREAM, minid=position.first_unapplied, approximate=False
            )

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_interval_seconds
            await self.claim_stalled()
        if now >= self._next_trim:
            self._next_trim = now + self.settings.trim_interval_seconds
            await self.trim()

    async def _heartbeat(self) -> None:
        self.last_batch_at = time.time()
        metrics.CONSUMER_HEARTBEAT.set(self.last_batch_at)
        await self.redis.hset(keys.CONSUMER_HEARTBEATS, self.name, repr(self.last_batch_at))
