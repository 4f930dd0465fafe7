"""What every process that serves lists starts the same way: its clients of the data tier
and of the ephemeral Redis, the memory guards that shed cache entries and records near
``maxmemory``, and the read-only feature client (the gateway and the recommenders)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from recsys_shared import web
from recsys_shared.features import FeatureReader
from recsys_shared.memory_guard import MemoryGuard, serving_guards
from recsys_shared.redis import RedisClient, connect
from recsys_shared.settings import ServingSettings


@dataclass(frozen=True, slots=True)
class ReadPath:
    main: RedisClient  # the data tier
    ephemeral: RedisClient  # cached lists and records: the ephemeral Redis, or ``main``
    guards: list[MemoryGuard]  # the first one sheds
    features: FeatureReader

    @property
    def shedding_guard(self) -> MemoryGuard:
        return self.guards[0]


async def start_read_path(settings: ServingSettings, stack: AsyncExitStack) -> ReadPath:
    """Open the read path's clients and start its guards; ``stack`` closes them in reverse."""
    main = await web.start_service(settings)
    stack.push_async_callback(main.aclose)
    ephemeral = main
    if settings.ephemeral_redis_dsn:
        ephemeral = await connect(
            settings.ephemeral_redis_dsn,
            command_timeout=settings.redis_timeout_seconds,
            name=f"{settings.service_name}-ephemeral",
        )
        stack.push_async_callback(ephemeral.aclose)
    guards = serving_guards(main, ephemeral, high_water=settings.ephemeral_writes_max_memory_ratio)
    for guard in guards:
        guard.start()
        stack.push_async_callback(guard.stop)
    return ReadPath(main, ephemeral, guards, FeatureReader(main, settings.partitions))
