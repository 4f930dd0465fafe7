"""Real processes on one data tier: once a service has recorded the tier's partition count,
a gateway, recommender or worker set to another count exits at start-up, saying which count
to set, instead of reading and writing users' data in the wrong partitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_shared.processes import RedisServer
from recsys_shared.testing import build_stack

pytestmark = pytest.mark.integration


def test_a_service_set_to_another_partition_count_exits_naming_the_recorded_one(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    stack = build_stack(redis_server, tmp_path, EVENT_PARTITIONS="2")
    try:
        stack.start("feature-store")  # the first start on the empty tier records 2
        for name in ("gateway", "recommender1", "worker"):
            child = stack.start(name, wait=False, env={"EVENT_PARTITIONS": "3"}).process
            assert child is not None
            assert child.wait(timeout=60) != 0, name  # it exits by itself, with an error
            assert "set EVENT_PARTITIONS=2" in stack.log(name), name
        stack.start("gateway")  # with the recorded count it starts and stays up
        assert stack.processes["gateway"].running()
    finally:
        stack.close()
