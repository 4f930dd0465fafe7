"""Event ingestion: a validated batch into the events stream, once per event_id.

One Lua script checks the backlog, sets each event's dedup marker and appends the new ones to
the stream, atomically: a 202 means every accepted event is in the stream (and, with Redis'
``appendfsync always``, on disk); an error means none of the batch's new events was counted
as seen, so the client's retry stores them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from recsys_shared import keys
from recsys_shared.errors import Backpressure
from recsys_shared.schemas import EventBatch, EventsAccepted, StoredEvent

# KEYS: events stream, pipeline counters, this second's accepted counter. ARGV: dedup prefix,
# dedup TTL, max backlog (0: none), counter TTL, then pairs of (event id, stored event JSON).
# Returns {accepted, duplicates}, or {-1, backlog} when the backlog is full.
_INGEST = """
local backlog_limit = tonumber(ARGV[3])
if backlog_limit > 0 then
  local backlog = redis.call('XLEN', KEYS[1])
  if backlog >= backlog_limit then return {-1, backlog} end
end
local accepted, duplicates = 0, 0
for i = 5, #ARGV, 2 do
  if redis.call('SET', ARGV[1] .. ARGV[i], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 1])
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
redis.call('HINCRBY', KEYS[2], 'accepted', accepted)
redis.call('HINCRBY', KEYS[2], 'duplicates', duplicates)
redis.call('INCRBY', KEYS[3], accepted)
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {accepted, duplicates}
"""


class EventIngestor:
    def __init__(self, client: aioredis.Redis, *, dedup_ttl_seconds: int, max_backlog: int) -> None:
        self.redis = client
        self.dedup_ttl_seconds = dedup_ttl_seconds
        self.max_backlog = max_backlog
        self._script = client.register_script(_INGEST)

    async def ingest(self, batch: EventBatch) -> EventsAccepted:
        now = datetime.now(UTC)
        args: list[str | int] = [
            keys.DEDUP_PREFIX,
            self.dedup_ttl_seconds,
            self.max_backlog,
            keys.THROUGHPUT_KEY_TTL_SECONDS,
        ]
        for event in batch.events:
            event_id = event.event_id or uuid.uuid4().hex
            stored = StoredEvent.from_input(event, event_id=event_id, now=now)
            args.extend((event_id, stored.model_dump_json(exclude_none=True)))
        accepted, duplicates = await self._script(
            keys=[
                keys.EVENTS_STREAM,
                keys.PIPELINE_STATS,
                keys.pipeline_accepted(int(now.timestamp())),
            ],
            args=args,
        )
        if accepted < 0:
            raise Backpressure(
                f"{duplicates} events are waiting to be applied, over the limit of "
                f"{self.max_backlog}; retry shortly.",
                retry_after=2,
            )
        return EventsAccepted(accepted=int(accepted), duplicates=int(duplicates))
