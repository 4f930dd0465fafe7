"""Dead letters: stream entries that cannot be applied, kept per partition (capped at
``DEAD_LETTERS_MAX`` each), listed by reason and replayed by admins.

Moving an entry here acknowledges it in the same script (``lua/dead_letter.lua``), so it is
never both pending and dead, and only the delivery whose acknowledgement takes it off the
pending list moves it: a consumer that claimed a stalled one's batch and the stalled one, both
holding the entry, leave one dead letter. As the applier does, the script acknowledges and
drops an entry of a user erased after it was received, so that no dead letter keeps what an
erasure deleted. A replay (``lua/replay.lua``) puts the entry's event back into its
partition's stream and removes the dead letter in one step; an event that still cannot be
applied comes back with its reason.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feature_store import metrics
from recsys_shared import keys
from recsys_shared.redis import Arg, LuaScript, RedisClient
from recsys_shared.schemas import DeadLetterEntry, DeadLetterReason, DeadLetters, ReplayResult

DEAD_LETTER = LuaScript.load(__package__, "lua/dead_letter.lua")
REPLAY = LuaScript.load(__package__, "lua/replay.lua")
#: Entry reasons whose entry holds no event to replay.
_NOTHING_TO_REPLAY = frozenset({DeadLetterReason.ENTRY_DELETED.value})
#: What ``lua/dead_letter.lua`` did with each entry.
_MOVED, _REDELIVERED, _ERASED = "moved", "redelivered", "erased"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stream_id: str
    reason: str
    entry: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """What became of the entries handed to :func:`dead_letter`: moved to the dead letters,
    already acknowledged by another delivery, or dropped because their user was erased."""

    moved: int
    redelivered: int
    erased: int


async def dead_letter(
    client: RedisClient, partition: keys.Partition, dead: Sequence[DeadLetter], *, cap: int
) -> DeadLettered:
    """Move entries read from ``partition``, still pending, to its dead letters and
    acknowledge them, in one script (see the module's docstring)."""
    args: list[Arg] = [_layout(partition, cap)]
    for letter in dead:
        args += [letter.stream_id, letter.reason, letter.detail, letter.entry, *_owner(letter)]
    outcomes: list[str] = await client.run(DEAD_LETTER, keys=[partition.events], args=args)
    for letter, outcome in zip(dead, outcomes, strict=True):
        if outcome == _MOVED:
            metrics.DEAD_LETTERS.labels(letter.reason).inc()
    counts = Counter(outcomes)
    metrics.EVENTS_REDELIVERED.inc(counts[_REDELIVERED])
    metrics.EVENTS_ERASED.inc(counts[_ERASED])
    return DeadLettered(counts[_MOVED], counts[_REDELIVERED], counts[_ERASED])


def _layout(partition: keys.Partition, cap: int) -> str:
    return json.dumps(
        {
            "dead": partition.dead_letters,
            "group": keys.EVENTS_GROUP,
            "cap": cap,
            "erased": partition.erased,
            "stats": partition.stats,
            "dead_letters_field": keys.STAT_DEAD_LETTERS,
            "redelivered_field": keys.STAT_REDELIVERED,
            "erased_field": keys.STAT_ERASED,
            "stream_id_field": keys.DEAD_STREAM_ID,
            "reason_field": keys.DEAD_REASON,
            "detail_field": keys.DEAD_DETAIL,
            "entry_field": keys.DEAD_ENTRY,
        }
    )


def _owner(letter: DeadLetter) -> tuple[str, str]:
    """The tombstone the script checks for the entry (its user's digest, as the applier
    passes it) and when the entry was received; ('', '') for an entry that names no user,
    which is moved whatever erasures there were."""
    try:
        event = json.loads(letter.entry)
    except (ValueError, RecursionError):
        return "", ""
    user_id = event.get("user_id") if isinstance(event, dict) else None
    if not isinstance(user_id, str):
        return "", ""
    # Without a received_at, the script goes by the entry's id alone: an event is received
    # before its entry enters the stream, so an entry that entered before the erasure was
    # received before it too.
    received_at = _seconds(event.get("received_at"))
    return keys.user_digest(user_id), "" if received_at is None else repr(received_at)


def _seconds(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _entries(partition: keys.Partition, reply: dict[str, Any] | None) -> list[DeadLetterEntry]:
    letters = []
    for letter_id, pairs in (reply or {}).items():
        fields = dict(pairs or [])
        letters.append(
            DeadLetterEntry(
                id=letter_id,
                partition=partition.number,
                stream_id=fields.get(keys.DEAD_STREAM_ID, ""),
                reason=fields.get(keys.DEAD_REASON, "unknown"),
                detail=fields.get(keys.DEAD_DETAIL, ""),
                entry=fields.get(keys.DEAD_ENTRY, ""),
            )
        )
    return letters


async def read_all(client: RedisClient, partition: keys.Partition) -> list[DeadLetterEntry]:
    """Every dead letter of a partition, newest first (bounded by the cap)."""
    return _entries(partition, await client.execute("XREVRANGE", partition.dead_letters, "+", "-"))


async def list_dead_letters(
    client: RedisClient,
    partitions: Sequence[keys.Partition],
    *,
    reason: str | None = None,
    limit: int = 100,
) -> DeadLetters:
    counts: Counter[str] = Counter()
    listed: list[DeadLetterEntry] = []
    for partition in partitions:
        for letter in await read_all(client, partition):
            counts[letter.reason] += 1
            if reason is None or letter.reason == reason:
                listed.append(letter)
    listed.sort(key=lambda letter: letter.id, reverse=True)
    return DeadLetters(total=sum(counts.values()), by_reason=dict(counts), entries=listed[:limit])


async def replay(
    client: RedisClient,
    partitions: Sequence[keys.Partition],
    *,
    reason: str | None = None,
    limit: int = 1000,
) -> ReplayResult:
    replayed = skipped = 0
    for partition in partitions:
        chosen = [
            letter
            for letter in await read_all(client, partition)
            if reason is None or letter.reason == reason
        ][: max(limit - replayed - skipped, 0)]
        if not chosen:
            continue
        replayable = [
            letter for letter in chosen if letter.reason not in _NOTHING_TO_REPLAY and letter.entry
        ]
        skipped += len(chosen) - len(replayable)
        if replayable:
            layout = json.dumps({"dead": partition.dead_letters, "event_field": keys.EVENT_FIELD})
            args: list[Arg] = [layout]
            for letter in reversed(replayable):  # oldest first, as they arrived
                args += [letter.id, letter.entry]
            replayed += int(await client.run(REPLAY, keys=[partition.events], args=args))
    return ReplayResult(replayed=replayed, skipped=skipped)
