"""The Redis deployments a test system runs on: one ``redis-server`` (the default), or a local
Redis Cluster with a standalone broker for Celery beside it (``REDIS_URL=redis+cluster://…``,
``CELERY_BROKER_URL``), as ``REDIS_CLUSTER=1 make run`` has it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.cluster

from recsys_shared.processes import RedisServer
from recsys_shared.redis_cluster import RedisCluster

#: Partitions of the events on a cluster in tests: enough to land on every master.
CLUSTER_PARTITIONS = 6


@dataclass
class DataTier:
    """Where a system's data lives: the data tier (one node or a cluster) and the broker."""

    name: str
    url: str
    broker_url: str
    partitions: int
    server: RedisServer | None = None
    cluster: RedisCluster | None = None
    broker: RedisServer | None = None

    def env(self) -> dict[str, str]:
        """The settings every service of the system reads."""
        return {
            "REDIS_URL": self.url,
            "CELERY_BROKER_URL": self.broker_url,
            "EVENT_PARTITIONS": str(self.partitions),
        }

    def inspector(self) -> Any:
        """A blocking redis-py client of the data tier for a test to look inside (decoded
        strings); cluster-aware when the tier is a cluster."""
        if self.cluster is not None:
            first = self.cluster.nodes[0]
            return redis.cluster.RedisCluster(
                host=first.host, port=first.port, decode_responses=True
            )
        return redis.Redis.from_url(self.url, decode_responses=True)

    def primaries(self, *, decode: bool = True) -> list[redis.Redis]:
        """A blocking client of each primary (the one server of a single node), for what is
        per server: memory, configuration, every key. ``decode=False`` for binary values."""
        if self.cluster is not None:
            return [
                redis.Redis(host=node.host, port=node.port, decode_responses=decode)
                for node in self.cluster.primaries()
            ]
        return [redis.Redis.from_url(self.url, decode_responses=decode)]

    def every_key(self) -> list[str]:
        """Every key of the data tier, from every primary."""
        found: list[str] = []
        for client in self.primaries():
            found += list(client.scan_iter(count=1000))
            client.close()
        return found

    def broker_inspector(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url, decode_responses=True)

    def flush(self) -> None:
        """Empty the data tier and the broker."""
        if self.cluster is not None:
            self.cluster.flush()
        if self.server is not None:
            _flush(self.server.url)
        if self.broker is not None and self.broker is not self.server:
            _flush(self.broker.url)


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def single_tier(server: RedisServer) -> DataTier:
    return DataTier(
        name="single", url=server.url, broker_url=server.url, partitions=1, server=server,
        broker=server,
    )  # fmt: skip


def cluster_tier(cluster: RedisCluster, broker: RedisServer) -> DataTier:
    return DataTier(
        name="cluster",
        url=cluster.url,
        broker_url=broker.url,
        partitions=CLUSTER_PARTITIONS,
        cluster=cluster,
        broker=broker,
    )
