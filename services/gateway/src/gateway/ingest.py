"""Event ingestion: a validated batch into the partitions' events streams, once per
(user, event_id) within the idempotency window.

The batch is split by partition (a hash of the user id, ``recsys_shared.keys``); each part is
one Lua script (``lua/ingest.lua``) on its partition's slot, which checks the backlog, checks
and appends the users' idempotency markers and appends the new events to the stream,
atomically. A 202 means every accepted event is in its stream (on disk with ``appendfsync
always``, and on ``DURABLE_REPLICAS`` replicas when set: ``WAIT`` before answering).

If one part fails after another was stored, the answer is a 503 all the same: the client
resends the batch, and the events that carry an ``event_id`` are recognised as duplicates;
events without one are not deduplicated (nothing could recognise them), so a client that
needs exactly-once sends ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime

from gateway import metrics
from recsys_shared import keys
from recsys_shared.errors import Backpressure, RecsysError, StoreUnavailable
from recsys_shared.redis import Arg, LuaScript, RedisClient
from recsys_shared.schemas import EventBatch, EventsAccepted, StoredEvent, ahead_of_clock

INGEST = LuaScript.load(__package__, "lua/ingest.lua")


def marker_digest(event_id: str) -> bytes:
    """What a marker keeps of an event_id: 8 bytes of BLAKE2b (per user, so a collision
    needs two of one user's ids in one window to share 64 bits)."""
    return hashlib.blake2b(event_id.encode(), digest_size=keys.MARKER_DIGEST_BYTES).digest()


class PartlyStored(StoreUnavailable):
    """Some partitions stored their events, another failed: resend the whole batch."""


class EventIngestor:
    def __init__(
        self,
        client: RedisClient,
        partitions: keys.Partitions,
        *,
        window_seconds: int,
        max_backlog: int,
        replicas: int = 0,
        replicas_timeout_ms: int = 200,
    ) -> None:
        """``client`` should be the ingest's own connection when ``replicas`` > 0: ``WAIT``
        holds the connection it runs on until the replicas answer."""
        self.redis = client
        self.partitions = partitions
        self.window_seconds = window_seconds
        self.max_backlog = max_backlog
        self.replicas = replicas
        self.replicas_timeout_ms = replicas_timeout_ms

    async def ingest(self, batch: EventBatch) -> EventsAccepted:
        now = datetime.now(UTC)
        parts: dict[keys.Partition, list[Arg]] = {}
        stored = StoredEvent.from_inputs(batch.events, now=now)
        corrected = sum(ahead_of_clock(event.timestamp, now) for event in batch.events)
        if corrected:
            metrics.EVENT_TIMES_CORRECTED.inc(corrected)
        for event, stored_event in zip(batch.events, stored, strict=True):
            digest = marker_digest(event.event_id) if event.event_id else b""
            parts.setdefault(self.partitions.of(event.user_id), []).extend(
                (event.user_id, digest, stored_event.model_dump_json(exclude_none=True))
            )
        outcomes = await asyncio.gather(
            *(self._store(partition, args, now) for partition, args in parts.items()),
            return_exceptions=True,
        )
        return self._answer(outcomes)

    async def _store(
        self, partition: keys.Partition, args: list[Arg], now: datetime
    ) -> EventsAccepted:
        second = int(now.timestamp())
        layout = {
            "stats": partition.stats,
            "second": partition.accepted(second),
            "second_ttl": keys.THROUGHPUT_KEY_TTL_SECONDS,
            "backlog_limit": self.max_backlog,
            "user_prefix": partition.user_prefix,
            "markers_suffix": keys.USER_MARKERS_SUFFIX,
            "window": self.window_seconds,
            "now": second,
            "event_field": keys.EVENT_FIELD,
            "accepted_field": keys.STAT_ACCEPTED,
            "duplicates_field": keys.STAT_DUPLICATES,
            "record_bytes": keys.MARKER_BYTES,
            "digest_bytes": keys.MARKER_DIGEST_BYTES,
        }
        accepted, duplicates = await self.redis.run(
            INGEST, keys=[partition.events], args=[json.dumps(layout), *args]
        )
        if accepted < 0:
            raise Backpressure(
                f"{duplicates} events are waiting to be applied in partition "
                f"{partition.number}, over the limit of {self.max_backlog}; retry shortly.",
                retry_after=2,
            )
        if self.replicas:
            # Also when every event was a duplicate: a resend after a 503 for replicas that
            # did not confirm in time finds the events stored on the master only. The script
            # wrote (its counters), so WAIT covers the first attempt's events too.
            await self._wait_for_replicas(partition)
        return EventsAccepted(accepted=int(accepted), duplicates=int(duplicates))

    async def _wait_for_replicas(self, partition: keys.Partition) -> None:
        acknowledged = await self.redis.wait_for_replicas(
            partition.events, self.replicas, self.replicas_timeout_ms
        )
        if acknowledged < self.replicas:
            raise StoreUnavailable(
                f"The events are on partition {partition.number}'s master but only "
                f"{acknowledged} of {self.replicas} replica(s) confirmed them within "
                f"{self.replicas_timeout_ms} ms; resend the batch (events with an event_id "
                "are recognised as duplicates).",
                retry_after=1,
            )

    @staticmethod
    def _answer(outcomes: list[EventsAccepted | BaseException]) -> EventsAccepted:
        stored = [outcome for outcome in outcomes if isinstance(outcome, EventsAccepted)]
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if not failures:
            return EventsAccepted(
                accepted=sum(outcome.accepted for outcome in stored),
                duplicates=sum(outcome.duplicates for outcome in stored),
            )
        first = failures[0]
        if not isinstance(first, RecsysError):
            raise first
        if not stored:
            raise first
        raise PartlyStored(
            f"Part of the batch was stored, part was not ({first.detail}); resend the whole "
            "batch: events with an event_id are recognised as duplicates.",
            retry_after=getattr(first, "retry_after", 1),
        )
