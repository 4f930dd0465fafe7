"""Dead letters: stream entries that cannot be applied, kept per partition (capped at
``DEAD_LETTERS_MAX`` each), listed by reason and replayed by admins.

Moving an entry here acknowledges it in the same script (``lua/dead_letter.lua``), so it is
never both pending and dead. A replay (``lua/replay.lua``) puts the entry's event back into its
partition's stream and removes the dead letter in one step; an event that still cannot be
applied comes back with its reason.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stream_id: str
    reason: str
    entry: str
    detail: str = ""


async def dead_letter(
    client: RedisClient, partition: keys.Partition, dead: Sequence[DeadLetter], *, cap: int
) -> None:
    layout = {
        "dead": partition.dead_letters,
        "group": keys.EVENTS_GROUP,
        "cap": cap,
        "stats": partition.stats,
        "dead_letters_field": keys.STAT_DEAD_LETTERS,
        "stream_id_field": keys.DEAD_STREAM_ID,
        "reason_field": keys.DEAD_REASON,
        "detail_field": keys.DEAD_DETAIL,
        "entry_field": keys.DEAD_ENTRY,
    }
    args: list[Arg] = [json.dumps(layout)]
    for letter in dead:
        args += [letter.stream_id, letter.reason, letter.detail, letter.entry]
    await client.run(DEAD_LETTER, keys=[partition.events], args=args)
    for letter in dead:
        metrics.DEAD_LETTERS.labels(letter.reason).inc()


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
