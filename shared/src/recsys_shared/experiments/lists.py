"""The lists an experiment served, kept where attribution can rely on them.

A list served outside experiments is recorded on the ephemeral Redis, which may shed or evict
it (it only feeds a monitoring metric). An experiment's decision rests on its attributed
events, so its lists are kept on the data tier, in a hash per user in the user's partition
(``Partition.user_lists``): erasure and retention delete it with the user's other keys, it
holds at most ``LISTS_PER_USER`` lists and expires ``RECOMMENDATION_TTL_SECONDS`` after the
newest. The script that writes a list also adds to the partition's experiment counters, in
the same slot.

An experiment list's ``recommendation_id`` is ``<random hex>.<experiment id>``: the applier
looks such ids up here (and under ``<id>:shadow``, the shadow's ranking of the same request).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from recsys_shared import keys
from recsys_shared.redis import Arg, LuaScript, RedisClient

RECORD = LuaScript.load("recsys_shared", "lua/experiment_lists.lua")
#: Lists kept per user within the attribution window (a user asking more often than this
#: within a day keeps their newest).
LISTS_PER_USER = 100
SHADOW_SUFFIX = ":shadow"
_SEPARATOR = "."


def new_id(experiment_id: str) -> str:
    return f"{os.urandom(16).hex()}{_SEPARATOR}{experiment_id}"


def is_experiment_id(recommendation_id: str) -> bool:
    return _SEPARATOR in recommendation_id


class ExperimentLists:
    def __init__(
        self, client: RedisClient, partitions: keys.Partitions, *, ttl_seconds: int = 86_400
    ) -> None:
        """``ttl_seconds``: how long lists are kept after a user's newest (the attribution
        window, ``RECOMMENDATION_TTL_SECONDS``)."""
        self.redis = client
        self.partitions = partitions
        self.ttl_ms = ttl_seconds * 1000

    async def record(
        self,
        user_id: str,
        experiment_id: str,
        lists: Sequence[tuple[str, str]],
        counters: Sequence[tuple[str, int]] = (),
        *,
        ranked_at: float | None = None,
    ) -> None:
        """Keep ``lists`` ((recommendation id, ``ServedList`` JSON) pairs) and add
        ``counters`` to the experiment's counts in the user's partition; nothing if the user
        was erased after ``ranked_at`` (default: now)."""
        partition = self.partitions.of(user_id)
        args: list[Arg] = [
            self.ttl_ms,
            LISTS_PER_USER,
            keys.user_digest(user_id),
            ranked_at if ranked_at is not None else time.time(),
            len(lists),
        ]
        for field, record in lists:
            args += [field, record]
        for counter, increment in counters:
            args += [counter, increment]
        await self.redis.run(
            RECORD,
            keys=[
                partition.user_lists(user_id),
                partition.experiment(experiment_id),
                partition.erased,
            ],
            args=args,
        )

    async def served_to_users(
        self, asked: dict[str, list[str]]
    ) -> dict[str, list[tuple[str | None, str | None]]]:
        """For each user, each recommendation id's ``ServedList`` JSON and its shadow's
        (None where there is none), in one round trip."""
        commands = []
        for user_id, recommendation_ids in asked.items():
            fields: list[Arg] = []
            for recommendation_id in recommendation_ids:
                fields += [recommendation_id, recommendation_id + SHADOW_SUFFIX]
            commands.append(("HMGET", self.partitions.of(user_id).user_lists(user_id), *fields))
        replies = await self.redis.execute_many(commands)
        return {
            user_id: list(zip(found[0::2], found[1::2], strict=True))
            for user_id, found in zip(asked, replies, strict=True)
        }
