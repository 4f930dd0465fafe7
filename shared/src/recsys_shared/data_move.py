"""Moving the data tier to a new Redis, with another ``EVENT_PARTITIONS`` if wanted: how a
deployment grows from one Redis (one partition) to a Redis Cluster (12), or to more
partitions, without losing its users, catalogue, models or experiments.

The partition count is fixed for a data tier (``recsys_shared.layout``): a user's keys live in
the partition of a hash of their id. So the move is a copy to an *empty* target, offline:

1. stop the gateways (nothing new comes in), let the feature-store apply every event, then
   stop every service; the move refuses a source whose streams still hold unapplied events;
2. ``make move-data`` (``python -m recsys_shared.data_move``) copies; the source is never
   changed, so a move that stops half-way is undone by emptying the target and run again;
3. start the services on the target with the new ``REDIS_URL`` and ``EVENT_PARTITIONS``.

What it does with each key family of ``keys.py``:

- a user's keys (features, markers, lists) are copied whole (``DUMP``/``RESTORE``, TTL kept)
  into the user's new partition, and so are their retention entry, their counts in the drift
  buckets and their dead letters, so that erasure and retention find them there;
- what is summed across partitions anyway (popularity, drift item, type and hit counts, the
  pipeline and experiment counters) is added up into partition 0;
- erasure tombstones hold a digest, not an id, so they go to every partition;
- the applied streams, consumer heartbeats and per-second throughput counters start afresh;
  locks, the broker's keys (task records, RedBeat) and the ephemeral families (cached lists,
  served-list records, rate limits) are not copied: they belong elsewhere or may be lost;
- every other ``rs:`` key (catalogue, registry, experiments, reports) is copied as it is;
- the target's layout (``rs:layout``) is written last.

A key the move does not know stops it before anything is written (a first pass over the
keys reads their names only). The move holds no list of the keys: it copies whole keys
``COPY_BATCH`` at a time as the scan finds them, and keeps in memory only the sums it
writes at the end (bounded by items, users and erasures, not by events) and the names of the
few partition-wide keys it has read (so that one the scan returns twice is summed once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from recsys_shared import keys
from recsys_shared.errors import RecsysError
from recsys_shared.layout import LAYOUT_VERSION
from recsys_shared.redis import Arg, RedisClient, connect
from recsys_shared.schemas import DataLayout
from recsys_shared.streams import pipeline_position

log = logging.getLogger(__name__)

#: Whole keys (a user's, the catalogue's, the registry's) copied per round trip.
COPY_BATCH = 1000
#: Families not copied: the broker's, the ephemeral Redis's, locks, and the layout (rewritten).
NOT_COPIED = (
    keys.TASK_DELIVERIES_PREFIX,
    keys.TASK_RECORD_PREFIX,
    keys.REDBEAT_PREFIX,
    keys.CACHE_PREFIX,
    keys.RECOMMENDATION_PREFIX,
    keys.RATE_LIMIT_PREFIX,
    keys.key("lock") + ":",
    keys.TRAINING_LOCK,
)
_PARTITIONED = re.compile(r"^" + re.escape(keys.PREFIX) + r":\{p(\d+)\}:(.+)$", re.S)
_DRIFT = re.compile(r"^drift:(-?\d+):(items|users|types|hits)$")
#: Per-partition keys that start afresh on the target.
_TRANSIENT = re.compile(r"^(events|heartbeats|accepted:\d+|applied:\d+)$")
#: Per-partition counters summed into the target's partition 0 (reads sum the partitions).
_SUMMED = re.compile(
    r"^(stats|popular|popular:dirty|experiment:.+|drift:-?\d+:(items|types|hits))$"
)


class MoveRefused(RecsysError):
    """The source or the target is not in a state the move can start from."""


@dataclass
class MoveReport:
    """What the move did, by kind."""

    layout: DataLayout
    counts: Counter[str] = field(default_factory=Counter)  # keys read (the scan may repeat one)


@dataclass(frozen=True, slots=True)
class _Key:
    name: str
    kind: str  # user, users, dead, erased, drift_users, summed, transient, copied, skipped
    rest: str = ""  # the part after the partition's tag
    user: str = ""


def classify(name: str) -> _Key:
    """Which family a source key is of, and how it moves; :class:`MoveRefused` when unknown."""
    match = _PARTITIONED.match(name)
    if match is None:
        skipped = not name.startswith(keys.PREFIX + ":") or name.startswith(NOT_COPIED)
        return _Key(name, "skipped" if skipped or name == keys.DATA_LAYOUT else "copied")
    rest = match.group(2)
    if rest.startswith("u:"):
        suffix = next((s for s in keys.USER_SUFFIXES if rest.endswith(s)), None)
        if suffix is not None and len(rest) > 2 + len(suffix):
            return _Key(name, "user", rest, rest[2 : -len(suffix)])
    simple = {"users": "users", "dead": "dead", "erased": "erased"}
    if rest in simple:
        return _Key(name, simple[rest], rest)
    if _DRIFT.match(rest) and rest.endswith(":users"):
        return _Key(name, "drift_users", rest)
    if _SUMMED.match(rest):
        return _Key(name, "summed", rest)
    if _TRANSIENT.match(rest):
        return _Key(name, "transient", rest)
    raise MoveRefused(f"{name}: a key the move does not know; nothing was written.")


async def move_data(
    source: RedisClient,
    target: RedisClient,
    partitions: keys.Partitions,
    *,
    source_partitions: int | None = None,
) -> MoveReport:
    """Copy the data tier at ``source`` to the empty ``target``, spread over ``partitions``.
    ``source_partitions``: the source's count, for data written before it was recorded."""
    await _refuse_unless_drained(source, await _source_partitions(source, source_partitions))
    await _refuse_unless_empty(target)
    async for name in source.scan(f"{keys.PREFIX}:*"):  # an unknown key refuses the move here
        classify(name)
    move = _Move(source, target, partitions)
    async for name in source.scan(f"{keys.PREFIX}:*"):
        await move.add(classify(name))
    await move.finish()
    return move.report


async def _source_partitions(source: RedisClient, given: int | None) -> keys.Partitions:
    stored = await source.execute("GET", keys.DATA_LAYOUT)
    if stored is not None:
        recorded = DataLayout.model_validate_json(stored)
        if recorded.version != LAYOUT_VERSION:
            raise MoveRefused(
                f"the source is in key layout {recorded.version}, not {LAYOUT_VERSION}"
            )
        return keys.Partitions(recorded.partitions)
    if given is None:
        raise MoveRefused(
            "the source has no recorded layout (written before the layout check): "
            "set MOVE_FROM_PARTITIONS to the EVENT_PARTITIONS it was written with"
        )
    return keys.Partitions(given)


async def _refuse_unless_drained(source: RedisClient, partitions: keys.Partitions) -> None:
    """Every event the streams hold was applied: no lag and nothing pending, as the pipeline
    status counts them (``recsys_shared.streams``; a stream without a group lags by all it
    holds)."""
    position = await pipeline_position(source, partitions.all)
    for partition, stream in zip(partitions.all, position.partitions, strict=True):
        if stream.lag or stream.pending:
            raise MoveRefused(
                f"partition {partition.number} still has events to apply: stop the gateways, "
                "let the feature-store apply them (GET /v1/pipeline: lag and pending 0), then "
                "stop it and move"
            )


async def _refuse_unless_empty(target: RedisClient) -> None:
    async for name in target.scan(f"{keys.PREFIX}:*"):
        raise MoveRefused(f"the target already holds {name}: move into an empty Redis")


#: ``PTTL`` of a key that does not exist.
_GONE = -2


def _ttl(pttl: Any) -> int | None:
    """``RESTORE``'s TTL for a key's ``PTTL``: 0 (none) for a key without one (-1), at least
    1 ms for one about to expire, which a 0 would make permanent, and None for a key that
    expired after its ``DUMP`` (not restored: made permanent, it would outlive its expiry)."""
    if int(pttl) == _GONE:
        return None
    return 0 if int(pttl) < 0 else max(int(pttl), 1)


def _pairs(reply: Any) -> dict[str, Any]:
    """A map reply, a list of [name, value] pairs or a flat [name, value, ...] list as a dict
    (glide answers maps for hashes and sorted sets, pairs for a stream entry's fields)."""
    if isinstance(reply, dict):
        return {str(name): value for name, value in reply.items()}
    if reply and isinstance(reply[0], list):
        return {str(name): value for name, value in reply}
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def _entries(reply: Any) -> list[tuple[str, dict[str, Any]]]:
    """``XRANGE``'s entries, oldest first, as (id, fields)."""
    return [(str(entry_id), _pairs(fields)) for entry_id, fields in _pairs(reply).items()]


class _Move:
    """The writes of one move: whole keys copied in batches as they come; sums and expiries
    gathered, then written by :meth:`finish`."""

    def __init__(self, source: RedisClient, target: RedisClient, partitions: keys.Partitions):
        self.source, self.target, self.partitions = source, target, partitions
        self.report = MoveReport(DataLayout(version=LAYOUT_VERSION, partitions=partitions.count))
        self.sums: dict[tuple[str, str], float] = defaultdict(float)  # (key, field) → total
        self.expiries: dict[str, int] = {}  # target key → latest expiry, ms since the epoch
        self.whole: list[_Key] = []  # keys waiting for the next batch copy
        self.read: set[str] = set()  # the partition-wide keys read: a few per partition and hour

    def base(self, user: str | None = None) -> keys.Partition:
        return self.partitions.all[0] if user is None else self.partitions.of(user)

    async def add(self, key: _Key) -> None:
        """Move one key the scan found. Whole keys are restored with ``REPLACE``, so one found
        twice is copied twice to the same effect; a key whose fields are summed is read once."""
        self.report.counts[key.kind] += 1
        if key.kind in {"transient", "skipped"}:
            return
        if key.kind in {"user", "copied"}:
            self.whole.append(key)
            if len(self.whole) >= COPY_BATCH:
                await self._copy_whole()
        elif key.name not in self.read:
            self.read.add(key.name)
            await self._fields(key)

    async def _copy_whole(self) -> None:
        batch, self.whole = self.whole, []
        dumps = [("DUMP", key.name) for key in batch] + [("PTTL", key.name) for key in batch]
        replies = await self.source.execute_many(dumps, decode=False)
        payloads, ttls = replies[: len(batch)], replies[len(batch) :]
        restores: list[tuple[Arg, ...]] = []
        for key, payload, pttl in zip(batch, payloads, ttls, strict=True):
            # None: gone since the scan (retention, an expiry), or since its DUMP.
            if payload is not None and (ttl := _ttl(pttl)) is not None:
                restores.append(("RESTORE", self._moved(key), ttl, payload, "REPLACE"))
        await self.target.execute_many(restores)

    def _moved(self, key: _Key) -> str:
        """Where a whole key goes: a user's into the user's new partition, the rest as named."""
        return self.base(key.user).base + ":" + key.rest if key.kind == "user" else key.name

    async def _fields(self, key: _Key) -> None:
        if key.kind == "users":
            await self._split_users(key.name)
        elif key.kind == "dead":
            await self._dead_letters(key.name)
        else:
            expiry = int(await self.source.execute("PEXPIRETIME", key.name))
            await self._hash_fields(key, expiry)

    async def _split_users(self, name: str) -> None:
        members = _pairs(await self.source.execute("ZRANGE", name, 0, -1, "WITHSCORES"))
        commands = [("ZADD", self.base(user).users, score, user) for user, score in members.items()]
        for start in range(0, len(commands), 1000):
            await self.target.execute_many(commands[start : start + 1000])

    async def _dead_letters(self, name: str) -> None:
        for _, fields in _entries(await self.source.execute("XRANGE", name, "-", "+")):
            flat = [part for pair in fields.items() for part in pair]
            for partition in self._owners(fields.get(keys.DEAD_ENTRY)):
                await self.target.execute("XADD", partition.dead_letters, "*", *flat)
            self.report.counts["dead_letter_entries"] += 1

    def _owners(self, entry: str | None) -> Iterable[keys.Partition]:
        """The user's partition; every partition when the entry is not JSON naming a user
        (the erasure script finds those by text, in every partition it is asked about)."""
        try:
            user = json.loads(entry or "").get("user_id")
        except (ValueError, AttributeError):
            user = None
        return [self.base(user)] if isinstance(user, str) else self.partitions.all

    async def _hash_fields(self, key: _Key, expiry: int) -> None:
        if key.kind == "summed" and key.rest in {"popular", "popular:dirty"}:
            await self._sorted_or_set(key)
            return
        values = _pairs(await self.source.execute("HGETALL", key.name))
        for name, value in values.items():
            if key.kind == "erased":  # a digest: every partition, the latest erasure kept
                for partition in self.partitions.all:
                    slot = (partition.erased, name)
                    self.sums[slot] = max(self.sums.get(slot, 0.0), float(value))
            else:
                owner = name if key.kind == "drift_users" else None
                self._add(self.base(owner).base + ":" + key.rest, name, float(value), expiry)

    async def _sorted_or_set(self, key: _Key) -> None:
        target = self.base().base + ":" + key.rest
        if key.rest == "popular":
            scores = await self.source.execute("ZRANGE", key.name, 0, -1, "WITHSCORES")
            for item, score in _pairs(scores).items():
                self._add(target, item, float(score), 0)
        else:
            members = await self.source.execute("SMEMBERS", key.name)
            if members:
                await self.target.execute("SADD", target, *members)

    def _add(self, target: str, name: str, value: float, expiry: int) -> None:
        self.sums[(target, name)] += value
        if expiry > 0:
            self.expiries[target] = max(self.expiries.get(target, 0), expiry)

    async def finish(self) -> None:
        """Copy the last whole keys, write the sums (a sorted set for popularity, hashes for the
        rest) and the expiries, and last the layout."""
        if self.whole:
            await self._copy_whole()
        commands: list[tuple[Arg, ...]] = []
        for (target, name), total in self.sums.items():
            value: Arg = int(total) if total.is_integer() else total
            if target.endswith(":popular"):
                commands.append(("ZADD", target, value, name))
            else:
                commands.append(("HSET", target, name, value))
        commands += [("PEXPIREAT", target, at) for target, at in self.expiries.items()]
        for start in range(0, len(commands), 1000):
            await self.target.execute_many(commands[start : start + 1000])
        self.report.counts["summed_fields"] = len(self.sums)
        await self.target.execute("SET", keys.DATA_LAYOUT, self.report.layout.model_dump_json())


async def _main() -> None:
    needed = ("MOVE_FROM_REDIS_URL", "MOVE_TO_REDIS_URL", "EVENT_PARTITIONS")
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        raise MoveRefused(f"set {', '.join(missing)} (URLs in the environment, not in argv)")
    source_url, target_url = os.environ["MOVE_FROM_REDIS_URL"], os.environ["MOVE_TO_REDIS_URL"]
    partitions = keys.Partitions(int(os.environ["EVENT_PARTITIONS"]))
    source = await connect(source_url, command_timeout=30, name="data-move")
    target = await connect(target_url, command_timeout=30, name="data-move")
    try:
        given = os.environ.get("MOVE_FROM_PARTITIONS")
        report = await move_data(
            source, target, partitions, source_partitions=int(given) if given else None
        )
    finally:
        await source.aclose()
        await target.aclose()
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(report.counts.items()))
    log.info("moved into %d partition(s): %s", partitions.count, counts)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="data-move: %(message)s")
    try:
        asyncio.run(_main())
    except MoveRefused as error:
        raise SystemExit(f"data-move: {error.detail}") from None


if __name__ == "__main__":
    main()
