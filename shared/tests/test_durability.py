"""The durability check at start-up: what it accepts, what it refuses, and where it only warns."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from recsys_shared.durability import NotDurable, check_durability, problems_of
from recsys_shared.processes import RedisServer
from recsys_shared.redis import connect
from recsys_shared.settings import Environment, ServiceSettings


def _settings(environment: Environment, mode: str = "enforce") -> ServiceSettings:
    return ServiceSettings(environment=environment, redis_durability_check=mode)  # type: ignore[arg-type]


async def _check(
    tmp_path: Path, arguments: Sequence[str], settings: ServiceSettings, replicas: int = 0
) -> list[str]:
    server = RedisServer(tmp_path / "redis", extra_args=list(arguments)).start()
    client = await connect(server.url)
    try:
        return await check_durability(client, settings, what="REDIS_URL", replicas=replicas)
    finally:
        await client.aclose()
        server.stop()


def test_the_rules() -> None:
    durable = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}

    assert problems_of(durable, replicas=0) == []
    assert problems_of({**durable, "appendfsync": "everysec"}, replicas=1) == []
    evicting = problems_of({**durable, "maxmemory-policy": "volatile-lru"}, replicas=0)
    assert len(evicting) == 1
    assert "volatile-lru" in evicting[0]
    lossy = problems_of({**durable, "appendonly": "no"}, replicas=0)
    assert len(lossy) == 1
    assert "DURABLE_REPLICAS" in lossy[0]
    # Where nothing waits for replicas (the broker), only AOF helps, and the advice says so.
    unwaited = problems_of({**durable, "appendfsync": "everysec"}, replicas=None)
    assert len(unwaited) == 1
    assert "DURABLE_REPLICAS" not in unwaited[0]


async def test_the_default_redis_passes(tmp_path: Path) -> None:
    assert await _check(tmp_path, [], _settings(Environment.PRODUCTION)) == []


async def test_production_refuses_a_redis_that_could_lose_or_evict(tmp_path: Path) -> None:
    with pytest.raises(NotDurable) as refused:
        await _check(
            tmp_path,
            ["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"],
            _settings(Environment.PRODUCTION),
        )

    assert "allkeys-lru" in refused.value.detail
    assert "appendonly=no" in refused.value.detail
    assert "REDIS_DURABILITY_CHECK=warn" in refused.value.detail


async def test_warn_and_development_only_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arguments = ["--maxmemory-policy", "volatile-lru"]
    with caplog.at_level(logging.WARNING, logger="recsys_shared.durability"):
        in_production = await _check(
            tmp_path / "a", arguments, _settings(Environment.PRODUCTION, "warn")
        )
        in_development = await _check(tmp_path / "b", arguments, _settings(Environment.DEVELOPMENT))

    assert len(in_production) == len(in_development) == 1
    assert caplog.text.count("volatile-lru") == 2


async def test_replicas_make_up_for_no_fsync_on_every_write(tmp_path: Path) -> None:
    problems = await _check(
        tmp_path, ["--appendfsync", "everysec"], _settings(Environment.PRODUCTION), replicas=1
    )

    assert problems == []


async def test_a_redis_that_refuses_config_is_a_warning_not_a_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="recsys_shared.durability"):
        problems = await _check(
            tmp_path, ["--rename-command", "CONFIG", ""], _settings(Environment.PRODUCTION)
        )

    assert problems == []
    assert "cannot be checked" in caplog.text
