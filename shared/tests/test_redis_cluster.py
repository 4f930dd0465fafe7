"""The local Redis Cluster of `REDIS_CLUSTER=1 make run`: a first start interrupted while it
formed the cluster is finished by the next start, not left half-formed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys_shared import redis_cluster
from recsys_shared.redis_cluster import RedisCluster


class Interrupted(Exception):
    """Stands for the Ctrl-C that stopped the first start."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    formed = RedisCluster(tmp_path / "cluster", masters=3, replicas_per_master=1)
    yield formed
    formed.stop()


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, subcommand: str, calls_before: int) -> None:
    """The first start stops at the ``calls_before + 1``-th ``CLUSTER <subcommand>``."""
    real = redis_cluster._command
    seen: list[str] = []

    def command(client: Any, *args: Any) -> Any:
        if args[:2] == ("CLUSTER", subcommand):
            seen.append(subcommand)
            if len(seen) > calls_before:
                raise Interrupted(subcommand)
        return real(client, *args)

    monkeypatch.setattr(redis_cluster, "_command", command)


@pytest.mark.parametrize(
    ("subcommand", "calls_before"),
    [("ADDSLOTSRANGE", 1), ("REPLICATE", 1)],
    ids=["one-master-has-its-slots", "one-replica-of-three"],
)
def test_a_start_interrupted_while_forming_is_finished_by_the_next(
    cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch, subcommand: str, calls_before: int
) -> None:
    _interrupt_at(monkeypatch, subcommand, calls_before)
    with pytest.raises(Interrupted):
        cluster.start()
    cluster.stop()
    monkeypatch.undo()

    cluster.start(timeout=30)

    assert cluster.healthy()
    masters = cluster.primaries()
    assert sorted(node.port for node in masters) == sorted(node.port for node in cluster.nodes[:3])
    for key in ("a", "b", "c", "rs:{p7}:events"):  # every slot has its master
        assert cluster.primary_of(key) in masters


def test_a_formed_cluster_restarts_as_it_was(cluster: RedisCluster) -> None:
    cluster.start()
    owner = cluster.primary_of("rs:{models}:active")
    cluster.stop()

    cluster.start(timeout=30)

    assert cluster.healthy()
    assert cluster.primary_of("rs:{models}:active").port == owner.port
