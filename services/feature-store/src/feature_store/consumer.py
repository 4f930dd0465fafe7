"""The events consumer: one read loop per partition, through a consumer group.

Delivery is at-least-once (a crash between read and acknowledgement redelivers); the applier
makes the effect exactly-once. Every replica reads every partition through the partition's
consumer group, so the replicas share the work; entries a dead replica left pending are claimed
with ``XAUTOCLAIM`` by any other once idle for ``claim_idle_ms``.

A blocking read holds its connection, so each partition's loop reads on a client of its own;
everything else goes through the process's shared client. No Redis error ends a loop (out of
memory, a lost connection, a timeout, a failover): it backs off and reads again, and
``/healthz`` fails if a loop has made no read for ``consumer_stale_seconds`` while Redis
answers, so that Kubernetes restarts a stuck replica but not every replica during an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from feature_store import metrics
from feature_store.applier import EventApplier, PreparedBatch
from feature_store.cache_nonces import CacheNonces
from feature_store.config import Settings
from feature_store.dead_letters import DeadLetter, dead_letter
from recsys_shared import keys
from recsys_shared import metrics as shared_metrics
from recsys_shared.errors import RecsysError, StoreError, StoreUnavailable
from recsys_shared.experiments.lists import ExperimentLists
from recsys_shared.redis import RedisClient, connect
from recsys_shared.schemas import DeadLetterReason, StoredEvent

log = logging.getLogger(__name__)

#: Back-off after a failed read or apply: doubling from the first to the last.
BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Heartbeats (who reads, and when) are written at most this often per partition.
HEARTBEAT_SECONDS = 2.0
#: On a stop, the batches already read get this long to be applied (within the pod's grace).
STOP_DRAIN_SECONDS = 5.0

Entry = tuple[str, dict[str, str] | None]
#: NOGROUP: the stream is gone (flushed, or a Redis restarted without its data); UNBLOCKED:
#: Redis 7 ends a blocked read with it when the stream is deleted meanwhile.
_STREAM_LOST = frozenset({"NOGROUP", "UNBLOCKED"})


def stream_entries(reply: Any, stream: str) -> list[Entry]:
    """``XREADGROUP``'s reply as (id, fields) pairs; fields are None for an entry that was
    deleted while pending."""
    if not reply:
        return []
    entries: dict[str, Any] = reply.get(stream) or {}
    return [
        (entry_id, dict(fields) if fields is not None else None)
        for entry_id, fields in entries.items()
    ]


_EVENTS = TypeAdapter(list[StoredEvent])


def parsed(entries: list[Entry]) -> tuple[list[tuple[str, StoredEvent]], list[DeadLetter]]:
    """The entries' events, and what cannot be applied. The whole batch is validated in one
    call (a third of the cost of one call per entry); only a batch with a bad entry in it is
    gone through one entry at a time, to find which."""
    present = [(stream_id, fields) for stream_id, fields in entries if fields is not None]
    dead = [
        DeadLetter(
            stream_id, DeadLetterReason.ENTRY_DELETED, ""
        )  # trimmed or deleted while pending
        for stream_id, fields in entries
        if fields is None
    ]
    raws = [fields.get(keys.EVENT_FIELD, "") for _, fields in present]
    try:
        events = _EVENTS.validate_json("[" + ",".join(raws) + "]")
        return [
            (stream_id, event) for (stream_id, _), event in zip(present, events, strict=True)
        ], dead
    except ValidationError:
        pass
    valid: list[tuple[str, StoredEvent]] = []
    for (stream_id, _), raw in zip(present, raws, strict=True):
        try:
            valid.append((stream_id, StoredEvent.model_validate_json(raw)))
        except ValidationError as error:
            dead.append(
                DeadLetter(stream_id, DeadLetterReason.INVALID_EVENT, raw, error.errors()[0]["msg"])
            )
    return valid, dead


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """A batch read from ``partition``, ready to apply: the script's share and the entries
    that cannot be applied."""

    partition: keys.Partition
    prepared: PreparedBatch | None
    dead: list[DeadLetter]
    started: float


class PartitionReader:
    """Reads, applies and acknowledges one partition."""

    def __init__(self, consumer: StreamConsumer, partition: keys.Partition) -> None:
        self.consumer = consumer
        self.partition = partition
        self.last_read_at = 0.0
        self._last_heartbeat = 0.0
        self._failures = 0

    async def run(self, blocking: RedisClient) -> None:
        """Consume until cancelled; Redis failures are waited out, never fatal."""
        own_pending = True  # after a restart under the same name, our pending entries first
        while True:
            try:
                await self.consumer.ensure_group(self.partition)
                if own_pending:
                    own_pending = await self.read_once(blocking, own_pending=True) > 0
                    self._failures = 0
                else:
                    await self.read_ahead(blocking)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if isinstance(error, StoreError) and error.code in _STREAM_LOST:
                    self.consumer.forget_group(self.partition)  # recreate, then read again
                    continue
                self._failures += 1
                self._report(error, self._failures)
                # A batch read before the failure may not have been applied: once Redis is
                # back, our own pending entries come first again, not after a claim timeout.
                own_pending = True
                await asyncio.sleep(BACKOFF_SECONDS[min(self._failures, len(BACKOFF_SECONDS)) - 1])

    async def read_ahead(self, blocking: RedisClient) -> None:
        """New entries, until a failure. Each batch is read and prepared while the one before
        it is applied, so Redis runs one batch's script while this process parses the next;
        the scripts still run one at a time, in the order the batches were read."""
        in_flight: list[asyncio.Task[None]] = []
        try:
            while True:
                entries = await self._read(blocking, own_pending=False)
                previous = in_flight[-1] if in_flight else None
                in_flight.append(asyncio.create_task(self._apply_after(previous, entries)))
                if previous is not None:  # at most one batch waits behind one being applied
                    await asyncio.shield(previous)  # a stop must not cancel it: see below
                    in_flight.remove(previous)
                    self._failures = 0
                await self._after_read()
        except asyncio.CancelledError:
            # Stopping (a rolling update): the batches already read are applied first, a
            # script each, so their entries are not left pending under a consumer name the
            # next process may not have, until another claims them (CLAIM_IDLE_MS later).
            if in_flight:
                await asyncio.wait(in_flight, timeout=STOP_DRAIN_SECONDS)
            raise
        finally:
            for task in in_flight:
                task.cancel()
            # A cancelled batch's entries stay pending: re-read (own pending) after a failure.
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _apply_after(self, previous: asyncio.Task[None] | None, entries: list[Entry]) -> None:
        prepared = await self.consumer.prepare(self.partition, entries)
        if previous is not None:
            await asyncio.shield(previous)  # its failure is this batch's too: not applied
        await self.consumer.commit(prepared)

    def _report(self, error: Exception, failures: int) -> None:
        shared_metrics.REDIS_ERRORS.labels(type(error).__name__).inc()
        if isinstance(error, RecsysError) and not isinstance(error, StoreError):
            log.warning(
                "partition %d waiting for redis (%s): %s",
                self.partition.number,
                type(error).__name__,
                error.detail,
            )
        else:
            log.error("partition %d reader failed", self.partition.number, exc_info=error)
        metrics.CONSUMER_FAILURES.labels(type(error).__name__).inc()
        if failures == len(BACKOFF_SECONDS):
            log.error("partition %d reader still failing; keeps retrying", self.partition.number)

    async def read_once(self, blocking: RedisClient, *, own_pending: bool = False) -> int:
        """Read and apply one batch (new entries, or with ``own_pending`` our unacknowledged
        ones); how many entries it held."""
        entries = await self._read(blocking, own_pending=own_pending)
        await self.consumer.process(self.partition, entries)
        await self._after_read()
        return len(entries)

    async def _read(self, blocking: RedisClient, *, own_pending: bool) -> list[Entry]:
        settings = self.consumer.settings
        stream = self.partition.events
        command: list[str | int] = [
            "XREADGROUP", "GROUP", keys.EVENTS_GROUP, self.consumer.name,
            "COUNT", settings.consumer_batch_size,
        ]  # fmt: skip
        if not own_pending:
            command += ["BLOCK", self.consumer.block_ms]
        command += ["STREAMS", stream, "0" if own_pending else ">"]
        return stream_entries(await blocking.execute(*command), stream)

    async def _after_read(self) -> None:
        self.last_read_at = time.time()
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        metrics.CONSUMER_HEARTBEAT.set(self.last_read_at)
        if self.last_read_at - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = self.last_read_at
        try:
            await self.consumer.redis.execute(
                "HSET", self.partition.heartbeats, self.consumer.name, repr(self.last_read_at)
            )
        except StoreUnavailable as error:  # at maxmemory: the next read's heartbeat will do
            log.debug("heartbeat not written: %s", error.detail)


class StreamConsumer:
    def __init__(
        self, client: RedisClient, settings: Settings, *, records: RedisClient | None = None
    ) -> None:
        self.redis = client
        self.settings = settings
        self.name = settings.consumer_name
        self.applier = EventApplier(
            client,
            history_cap=settings.history_cap,
            half_life_days=settings.popularity_half_life_days,
            records=records,
            experiment_lists=ExperimentLists(client, settings.partitions),
            nonces=CacheNonces(records or client),
        )
        # A blocking read must end before the command timeout, or every idle read is an error.
        self.block_ms = min(
            settings.consumer_block_ms, int(settings.redis_timeout_seconds * 1000 / 2)
        )
        self.readers = [PartitionReader(self, partition) for partition in settings.partitions.all]
        self._groups_ready: set[int] = set()

    @property
    def last_read_at(self) -> float:
        """When the slowest partition's reader last finished a read (0: one never did)."""
        return min(reader.last_read_at for reader in self.readers)

    async def run(self) -> None:
        """Every partition's reader, each on a blocking client of its own."""
        clients = [
            await connect(
                self.settings.redis_dsn,
                command_timeout=self.settings.redis_timeout_seconds,
                name=f"{self.settings.service_name}-reader",
            )
            for _ in self.readers
        ]
        try:
            await asyncio.gather(
                *(reader.run(client) for reader, client in zip(self.readers, clients, strict=True))
            )
        finally:
            await self.applier.settle()  # the last batches' cache renewals, before we stop
            for client in clients:
                await client.aclose()

    async def ensure_group(self, partition: keys.Partition) -> None:
        """The partition's stream and consumer group exist (again, after Redis lost them)."""
        if partition.number in self._groups_ready:
            return
        try:
            await self.redis.execute(
                "XGROUP", "CREATE", partition.events, keys.EVENTS_GROUP, "0", "MKSTREAM"
            )
        except StoreError as error:
            if error.code != "BUSYGROUP":
                raise
        self._groups_ready.add(partition.number)

    def forget_group(self, partition: keys.Partition) -> None:
        """After NOGROUP (the stream was lost): create it again before the next read."""
        self._groups_ready.discard(partition.number)

    async def process(self, partition: keys.Partition, entries: list[Entry]) -> None:
        """Apply a batch of entries read from ``partition`` (and dead-letter the bad ones),
        on its own: its cache renewals are done too when this returns (the read-ahead loop
        lets them run on while it reads)."""
        await self.commit(await self.prepare(partition, entries))
        await self.applier.settle()

    async def prepare(self, partition: keys.Partition, entries: list[Entry]) -> ParsedBatch:
        """The Python share of a batch: parsing, attribution reads, the script's arguments."""
        started = time.perf_counter()
        valid, dead = parsed(entries)
        prepared = await self.applier.prepare(partition, valid, now=time.time())
        return ParsedBatch(partition, prepared, dead, started)

    async def commit(self, batch: ParsedBatch) -> None:
        """Apply a prepared batch (one script), then dead-letter what could not be parsed."""
        if batch.prepared is None and not batch.dead:
            return  # an empty read (a blocking read that timed out): nothing to count
        result = await self.applier.run(batch.prepared)
        if batch.dead:
            await dead_letter(
                self.redis, batch.partition, batch.dead, cap=self.settings.dead_letters_max
            )
        metrics.EVENTS_APPLIED.inc(result.applied)
        metrics.EVENTS_REDELIVERED.inc(result.duplicates)
        metrics.EVENTS_ERASED.inc(result.erased)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - batch.started)
