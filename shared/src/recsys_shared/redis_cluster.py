"""A local Redis Cluster from plain ``redis-server`` processes: ``REDIS_CLUSTER=1 make run``,
the cluster tests and ``make bench-ingest``.

Each node is a :class:`~recsys_shared.processes.RedisServer` in cluster mode with AOF as the
single-node default has it. The cluster is formed with Redis's own ``CLUSTER`` commands (what
``redis-cli --cluster create`` sends), so only ``redis-server`` is needed: masters get equal
slot ranges, each replica follows one master. A cluster whose nodes kept their configuration
(``nodes-<port>.conf`` in their folders) forms again by itself on restart.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import IO, Any

import redis

from recsys_shared.processes import RedisServer, free_cluster_port, wait_until

SLOTS = 16_384


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class RedisCluster:
    """``masters`` masters with ``replicas_per_master`` replicas each, on consecutive ports
    from ``base_port`` (or free ports when ``base_port`` is None)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        base_port: int | None = None,
        node_timeout_ms: int = 2000,
        output: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> None:
        self.data_dir = data_dir
        self.masters = masters
        self.replicas_per_master = replicas_per_master
        count = masters * (1 + replicas_per_master)
        self.nodes = [
            RedisServer(
                data_dir / f"node-{index}",
                port=base_port + index if base_port is not None else free_cluster_port(),
                output=output,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{index}.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                ],
            )
            for index in range(count)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in self.nodes)

    def client(self, node: RedisServer, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host=node.host, port=node.port, socket_timeout=timeout)

    def start(self, timeout: float = 60.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        if not self._formed():
            self._form()
        wait_until(self.healthy, timeout=timeout, interval=0.2, what="the cluster to be ok")
        return self

    def _formed(self) -> bool:
        """Every slot assigned and every replica following a master (formed before: the nodes
        restarted from their files, the masters perhaps moved since by a failover)."""
        info = _command(self.client(self.nodes[0]), "CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_slots_assigned:16384" in text and len(self.primaries()) == self.masters

    def _form(self) -> None:
        """Form the cluster, or finish one whose forming was interrupted (a first `make run`
        stopped part-way): each step skips what its node already did, so no slot is added
        twice (Redis refuses it) and no replica is left unassigned."""
        first = self.nodes[0]
        for node in self.nodes[1:]:
            _command(self.client(node), "CLUSTER", "MEET", first.host, first.port)
        per_master = SLOTS // self.masters
        for index, node in enumerate(self.nodes[: self.masters]):
            start = index * per_master
            end = SLOTS - 1 if index == self.masters - 1 else start + per_master - 1
            if len(self._own_line(node)) <= 8:  # no slots yet (they follow the 8th field)
                _command(self.client(node), "CLUSTER", "ADDSLOTSRANGE", start, end)
        wait_until(self._all_known, timeout=30, interval=0.1, what="the nodes to meet")
        for index, replica in enumerate(self.nodes[self.masters :]):
            master = self.nodes[index % self.masters]
            master_id = self._own_line(master)[0]
            if self._own_line(replica)[3] != master_id:
                _command(self.client(replica), "CLUSTER", "REPLICATE", master_id)

    def _own_line(self, node: RedisServer) -> list[str]:
        """The node's own line of ``CLUSTER NODES``: id, address, flags, master id (``-`` for
        a master), ..., then its slot ranges."""
        listing = _command(self.client(node), "CLUSTER", "NODES")
        text = listing.decode() if isinstance(listing, bytes) else str(listing)
        return next(line.split() for line in text.splitlines() if "myself" in line.split()[2])

    def _all_known(self) -> bool:
        for node in self.nodes:
            listing = _command(self.client(node), "CLUSTER", "NODES")
            text = listing.decode() if isinstance(listing, bytes) else str(listing)
            if len(text.strip().splitlines()) < len(self.nodes):
                return False
        return True

    def healthy(self) -> bool:
        """Every node says ``cluster_state:ok`` and every master has its replicas."""
        try:
            for node in self.nodes:
                info = _command(self.client(node), "CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
            return len(self.primaries()) == self.masters and self._replicas_synced()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False

    def _replicas_synced(self) -> bool:
        for node in self.nodes:
            role = _command(self.client(node), "ROLE")
            if role[0] in (b"slave", "slave") and role[3] not in (b"connected", "connected"):
                return False
        return True

    def primaries(self) -> list[RedisServer]:
        """The nodes that are masters now (a failover changes them)."""
        found = []
        for node in self.nodes:
            if not node.ping():
                continue
            role = _command(self.client(node), "ROLE")
            if role[0] in (b"master", "master"):
                found.append(node)
        return found

    def primary_of(self, key: str) -> RedisServer:
        """The master that owns ``key``'s slot now."""
        any_node = next(node for node in self.nodes if node.ping())
        slot = int(_command(self.client(any_node), "CLUSTER", "KEYSLOT", key))
        for node in self.primaries():
            for entry in _command(self.client(node), "CLUSTER", "SLOTS"):
                low, high, master = int(entry[0]), int(entry[1]), entry[2]
                port = int(master[1])
                if low <= slot <= high and port == node.port:
                    return node
        raise LookupError(f"No master owns the slot of '{key}'.")

    def wait_for_failover(self, dead: RedisServer, timeout: float = 30.0) -> None:
        """Until a replica has replaced ``dead`` and the cluster is ok again."""

        def replaced() -> bool:
            alive = [node for node in self.primaries() if node is not dead]
            return len(alive) == self.masters and self._state_ok(skip=dead)

        wait_until(replaced, timeout=timeout, interval=0.2, what="a replica to take over")

    def _state_ok(self, *, skip: RedisServer) -> bool:
        for node in self.nodes:
            if node is skip or not node.ping():
                continue
            info = _command(self.client(node), "CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        """Empty every master (tests)."""
        for node in self.primaries():
            self.client(node).flushall()
        time.sleep(0.05)
