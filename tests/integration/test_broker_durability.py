"""A worker and a beat in production refuse a broker of their own that could lose Celery's
messages, as the gateway does (its in-process test is in services/gateway/tests/test_config.py):
each exits at start-up naming ``CELERY_BROKER_URL`` and what to set; a worker starts on a
durable one."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_shared.processes import RedisServer
from recsys_shared.testing import build_stack

pytestmark = pytest.mark.integration


def test_a_production_worker_and_beat_exit_on_a_broker_that_could_lose_messages(
    redis_server: RedisServer,
    redis_url: str,
    ephemeral_server: RedisServer,
    own_redis: RedisServer,
    tmp_path: Path,
) -> None:
    stack = build_stack(
        redis_server,
        tmp_path,
        ENVIRONMENT="production",
        CELERY_BROKER_URL=ephemeral_server.url,  # no AOF: a crash loses what it acknowledged
    )
    try:
        for name in ("worker", "beat"):
            child = stack.start(name, wait=False).process
            assert child is not None
            assert child.wait(timeout=60) != 0, name  # it exits by itself, with an error
            log = stack.log(name)
            assert f"retraining-worker ({name}): CELERY_BROKER_URL" in log
            assert "appendonly=no" in log
            assert "DURABLE_REPLICAS" not in log  # nothing waits for the broker's replicas

        stack.start("worker", env={"CELERY_BROKER_URL": own_redis.url})  # AOF, every write
        assert stack.processes["worker"].running()
    finally:
        stack.close()
