"""A whole system per test module: real redis-server, services and Celery worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from recsys_shared.processes import RedisServer
from recsys_shared.testing import Stack, build_stack

SERVICES = ("feature-store", "recommender1", "recommender2", "gateway", "worker")


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    system = build_stack(redis_server, tmp_path_factory.mktemp("stack"))
    try:
        for name in SERVICES:
            system.start(name, wait=False)
        for name in SERVICES:
            system.processes[name].wait_healthy(timeout=90)
        yield system
    finally:
        system.close()
