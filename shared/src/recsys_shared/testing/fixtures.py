"""Pytest fixtures shared by every suite (registered by the root ``conftest.py``).

Tests that touch Redis get a real ``redis-server`` started for the session on a free port, and
a clean database per test (or, to fill up and stop, a server of their own, and an ephemeral
one); ``data_tier`` runs a test once on a single Redis and once on a local 3-master Redis
Cluster (with a standalone broker), which starts once per session when first asked for.
Every test is in one of two pytest-xdist groups: ``BESIDE_THE_REST``, or the rest in order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from recsys_shared.processes import RedisServer
from recsys_shared.redis import RedisClient, connect
from recsys_shared.redis_cluster import RedisCluster
from recsys_shared.testing.tiers import DataTier, cluster_tier, single_tier

#: Runs a cross-service test module once on each data tier (``pytestmark = [..., EVERY_TIER]``):
#: the parameter of the module-scoped ``tier`` fixture in tests/conftest.py.
EVERY_TIER = pytest.mark.parametrize("tier", ["single", "cluster"], indirect=True, scope="module")

#: A module ``make test`` runs on a second pytest-xdist worker (``--dist loadgroup``), beside
#: the first, which runs everything else in order. Two kinds go there: modules whose tests
#: mostly wait out a minimum the services enforce (the broker's visibility timeout after a
#: kill -9, RedBeat's lock), so their waiting overlaps the rest's work; and the deployment
#: checks, busy but not timing-sensitive, which come first in collection order and so run
#: beside the unit tests, which tolerate contention. Anything else stays in order: two busy
#: workers on two cores would make the timing-sensitive tests (failovers, takeovers,
#: latencies) contend all along.
BESIDE_THE_REST = pytest.mark.xdist_group("beside-the-rest")
#: The group of every test not marked otherwise: one worker, in collection order.
IN_ORDER = "in-order"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(IN_ORDER))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters, no replicas (the chaos test starts its own cluster with replicas)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"), replicas_per_master=0).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def broker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The standalone Redis for Celery beside a cluster."""
    server = RedisServer(tmp_path_factory.mktemp("broker")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to fill up, stop and start again."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def ephemeral_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A second redis-server of the test's own for ``EPHEMERAL_REDIS_URL``, without
    persistence as it is deployed: where cached lists and served-list records live."""
    server = RedisServer(tmp_path / "ephemeral", durable=False).start()
    yield server
    server.stop()


@pytest.fixture
async def ephemeral(ephemeral_server: RedisServer) -> AsyncIterator[RedisClient]:
    """The services' client on ``ephemeral_server``, quick to give up when it is stopped."""
    client = await connect(ephemeral_server.url, command_timeout=0.5)
    yield client
    await client.aclose()


@pytest.fixture(params=["single", "cluster"])
def data_tier(request: pytest.FixtureRequest) -> DataTier:
    """A clean data tier: a single Redis, then a 3-master cluster."""
    if request.param == "single":
        tier = single_tier(request.getfixturevalue("redis_server"))
    else:
        tier = cluster_tier(
            request.getfixturevalue("redis_cluster"), request.getfixturevalue("broker_server")
        )
    tier.flush()
    return tier


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's single Redis, emptied."""
    single_tier(redis_server).flush()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    """The services' client on a clean single Redis."""
    client = await connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def inspector(redis_url: str) -> Iterator[redis.Redis]:
    """A blocking redis-py client on the same clean Redis as ``redis_client``, for a test to
    set data up and look inside (text decoded)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """A service's lifespan reconfigures the root logger; put pytest's handlers back after
    (for a test that starts an app)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
