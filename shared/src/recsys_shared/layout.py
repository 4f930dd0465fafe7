"""The data tier's layout, recorded in Redis by the first service to start on it, so that a
service configured for another layout refuses to start instead of misplacing users' data.

A user's keys live in the partition ``keys.partition_of(user, EVENT_PARTITIONS)``. A service
started on data written with another ``EVENT_PARTITIONS`` would look for each user in the
wrong partition: their history would seem empty, their new events would be stored beside the
old ones, and an erasure or the retention pass would miss what the old count put elsewhere:
data kept that nobody can reach. The same holds for a release that moves keys
(``LAYOUT_VERSION``). So every service that touches the partitions (the gateway, the
recommenders, the feature-store and the worker) checks at start-up, before its first read:

- on a data tier with no layout recorded (a new one), it records its own (``SET NX``: the
  first to start wins, and every later start is compared with it);
- on a layout that differs, it stops with :class:`LayoutMismatch`, naming both. Another
  partition count needs the data moved into a new data tier, offline
  (:mod:`recsys_shared.data_move`, docs/deploy.md "Moving the data there").

A data tier that does not answer at start-up cannot be checked: the service logs it and
starts (as with the durability check), and the next start checks.
"""

from __future__ import annotations

import logging

from recsys_shared import keys
from recsys_shared.errors import RecsysError, StoreUnavailable
from recsys_shared.redis import RedisClient, connect
from recsys_shared.schemas import DataLayout

log = logging.getLogger(__name__)

#: The key scheme's version: bumped by a release that moves or renames keys, whose notes then
#: say how to migrate.
LAYOUT_VERSION = 1


class LayoutMismatch(RecsysError):
    """The data tier was written in another layout; the service refuses to start."""


async def check_layout(client: RedisClient, partitions: keys.Partitions) -> DataLayout | None:
    """Record this service's layout on a new data tier, or check it against the recorded one;
    the recorded layout (``None`` when the data tier did not answer)."""
    wanted = DataLayout(version=LAYOUT_VERSION, partitions=partitions.count)
    try:
        stored = await client.execute("GET", keys.DATA_LAYOUT)
        if stored is None:  # a new data tier: the first service to start records its layout
            await client.execute("SET", keys.DATA_LAYOUT, wanted.model_dump_json(), "NX")
            stored = await client.execute("GET", keys.DATA_LAYOUT)
    except StoreUnavailable as error:
        log.warning("the data tier did not answer; its layout was not checked: %s", error.detail)
        return None
    if stored is None:  # emptied between the two commands: nothing to compare with
        return None
    recorded = DataLayout.model_validate_json(stored)
    if recorded != wanted:
        raise LayoutMismatch(_mismatch(recorded, wanted))
    return recorded


def _mismatch(recorded: DataLayout, wanted: DataLayout) -> str:
    if recorded.version != wanted.version:
        return (
            f"the data tier is in key layout {recorded.version}, this release uses "
            f"{wanted.version}: migrate it as the release notes say, or start on an empty one"
        )
    return (
        f"the data tier's users are spread over {recorded.partitions} partition(s), and this "
        f"service is set to EVENT_PARTITIONS={wanted.partitions}: set EVENT_PARTITIONS="
        f"{recorded.partitions} (a different count would misplace every user's data), or move "
        "the data into a new data tier first (python -m recsys_shared.data_move)"
    )


async def check_layout_at(url: str, partitions: keys.Partitions, *, name: str) -> DataLayout | None:
    """:func:`check_layout` for a process that has no client of the data tier yet (the
    worker, before its first task)."""
    client = await connect(url, name=name)
    try:
        return await check_layout(client, partitions)
    finally:
        await client.aclose()
