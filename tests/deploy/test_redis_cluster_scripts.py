"""The Redis Cluster scripts that Kubernetes and compose run, run here on real redis-servers.

``redis-node.sh`` starts one node (the component's StatefulSet and compose's redis-node-*),
``cluster-init.sh`` makes six of them one cluster (the component's Job, compose's
redis-cluster-init). Here the six nodes are six processes on 127.0.0.1, on ports of their own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from recsys_shared.processes import ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy/k8s/components/redis-cluster/scripts"
PASSWORD = "0123456789abcdef0123456789abcdef"


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, so at most 55535."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class Nodes:
    """Six redis-node.sh processes, each with its data directory, restartable on new ports."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def start(self) -> Nodes:
        self.ports = [cluster_port() for _ in range(6)]
        self.processes = []
        for index, port in enumerate(self.ports):
            data = self.workdir / f"node-{index}"
            data.mkdir(exist_ok=True)
            self.logs.append((self.workdir / f"node-{index}.log").open("ab"))
            process = ManagedProcess(
                f"redis-node-{index}",
                ["sh", str(SCRIPTS / "redis-node.sh")],
                env={
                    "REDIS_PASSWORD": PASSWORD,
                    "REDIS_PORT": str(port),
                    "REDIS_DIR": str(data),
                    "REDIS_BIND": "127.0.0.1",
                    "REDIS_MAXMEMORY": "64mb",
                },
                output=self.logs[-1],
            ).start()
            self.processes.append(process)
        for port in self.ports:
            wait_until(lambda port=port: self.pings(port), timeout=20, what=f"node on {port}")
        return self

    def pings(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.ConnectionError:
            return False

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=5, decode_responses=True)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        for log in self.logs:
            log.close()
        self.logs = []

    def init(self, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(SCRIPTS / "cluster-init.sh")],
            env={
                **os.environ,
                "REDIS_PASSWORD": PASSWORD,
                "CLUSTER_NODES": " ".join(f"localhost:{port}" for port in self.ports),
                "CLUSTER_REPLICAS": "1",
                "CLUSTER_INIT_TIMEOUT_SECONDS": str(timeout),
            },
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            check=False,
        )

    def serves(self) -> bool:
        """A key in each of 12 partitions' slots, written and read through a cluster client
        seeded with one node (it finds the others from the cluster's own map)."""
        cluster = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", self.ports[3])], password=PASSWORD
        )
        try:
            for partition in range(12):
                cluster.set(f"{{p{partition}}}:probe", partition)
            read = [cluster.get(f"{{p{partition}}}:probe") for partition in range(12)]
            return read == [str(partition).encode() for partition in range(12)]
        finally:
            cluster.close()

    def roles(self) -> dict[str, str]:
        """Node id -> role, as the first node sees the cluster."""
        # redis-py parses the reply: {"ip:port": {"node_id": ..., "flags": ...}, ...}
        nodes = self.client(self.ports[0]).execute_command("CLUSTER NODES")
        return {
            node["node_id"]: "master" if "master" in node["flags"] else "replica"
            for node in nodes.values()
        }


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is needed (Debian: apt-get install redis-tools)")
    started = Nodes(tmp_path).start()
    yield started
    started.stop()


def test_six_nodes_become_three_masters_with_a_replica_each_once(nodes: Nodes) -> None:
    created = nodes.init()
    assert created.returncode == 0, created.stdout + created.stderr
    assert "no cluster yet: creating it" in created.stdout
    assert "cluster_state:ok on every node; 3 masters, 3 replicas" in created.stdout
    roles = nodes.roles()
    assert sorted(roles.values()) == ["master"] * 3 + ["replica"] * 3

    # Every node runs as the deployments need it: cluster mode, durable, never evicting.
    for port in nodes.ports:
        config = nodes.client(port).config_get("*")
        assert config["cluster-enabled"] == "yes"
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")
        assert config["maxmemory-policy"] == "noeviction"

    # It serves, behind its password, through a cluster client seeded with one node.
    assert nodes.serves()

    # Run again (every apply, every `compose up`): nothing is created twice.
    again = nodes.init()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "the cluster exists" in again.stdout
    assert nodes.roles() == roles


def test_nodes_that_all_restart_on_new_addresses_are_reunited(nodes: Nodes) -> None:
    assert nodes.init().returncode == 0
    roles = nodes.roles()
    nodes.stop()
    nodes.start()  # the same data directories, every node on a new port: pods rescheduled
    reunited = nodes.init()
    assert reunited.returncode == 0, reunited.stdout + reunited.stderr
    assert "introducing every member at its current address" in reunited.stdout
    assert nodes.roles().keys() == roles.keys()  # the same six nodes, no new cluster
    for port in nodes.ports:
        assert nodes.client(port).execute_command("CLUSTER INFO")["cluster_state"] == "ok"
    assert nodes.serves()


def test_a_node_that_lost_its_data_is_left_to_a_person(nodes: Nodes) -> None:
    assert nodes.init().returncode == 0
    nodes.stop()
    shutil.rmtree(nodes.workdir / "node-5")  # a volume lost
    nodes.start()
    refused = nodes.init(timeout=20)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "empty node(s) beside the cluster" in refused.stdout
    assert "--cluster-slave" in refused.stdout
