"""The experiment runtime on a real Redis: one replica decides, ended experiments are
forgotten after their retention, a stop and a decision cannot both win, a promotion whose
activation Redis did not answer is activated later unless another version was since."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.experiments import ExperimentRuntime
from recsys_shared import keys
from recsys_shared.errors import StoreUnavailable
from recsys_shared.experiments import decision
from recsys_shared.experiments.assignment import group
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.processes import RedisServer
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Decision, ExperimentIn, ExperimentStep, StoredExperiment
from recsys_shared.testing import model_info
from recsys_shared.testing.waiting import eventually

PARTITIONS = keys.Partitions(2)


async def _runtime(client: RedisClient, **settings: float) -> ExperimentRuntime:
    registry = ModelRegistry(client)
    for version in (1, 2):
        await registry.record(model_info(version))
    return ExperimentRuntime(
        ExperimentStore(client, PARTITIONS),
        registry,
        refresh_seconds=1,
        check_seconds=1,
        tau=0.05,
        alpha=0.05,
        retention_days=settings.get("retention_days", 180),
    )


async def _prepared(_: int) -> None:
    return None


CANARY = ExperimentIn.model_validate(
    {"name": "c", "mode": "canary", "variants": [{"model_version": 1}, {"model_version": 2}]}
)


async def test_an_ended_experiment_is_forgotten_after_its_retention(
    redis_client: RedisClient,
) -> None:
    runtime = await _runtime(redis_client, retention_days=1)
    store = runtime.store
    old = await store.create(CANARY, runtime.registry, _prepared)
    long_ago = datetime.now(UTC) - timedelta(days=2)
    await store.save_state(old.id, decision.stop(old, long_ago, "old").state)
    recent = await store.create(CANARY, runtime.registry, _prepared)
    await store.save_state(recent.id, decision.stop(recent, datetime.now(UTC), "recent").state)
    await store.add_exposures(old.id, "control", ["u1", "u2", "u3"])

    await runtime.check()  # no experiment runs: retention still happens

    assert [kept.id for kept in await store.all()] == [recent.id]
    assert (await store.counters(old.id)).values == {}


async def test_a_stop_and_a_decision_cannot_both_win(redis_client: RedisClient) -> None:
    runtime = await _runtime(redis_client)
    stored = await runtime.store.create(CANARY, runtime.registry, _prepared)
    now = datetime.now(UTC)
    assert await runtime.apply(stored, decision.stop(stored, now, "first"))
    rolled_back = decision.decide(
        stored,
        decision.Counters(
            {"control:exposures": 1000, "control:clicks": 500, "canary:exposures": 100}
        ),
        now=now,
        tau=0.05,
        alpha=0.05,
    )
    assert rolled_back is not None
    assert not await runtime.apply(stored, rolled_back)  # it had ended: the first one won
    assert (await runtime.store.get(stored.id)).state.decision is Decision.STOPPED
    assert await runtime.store.running() is None


async def test_only_the_lock_holder_decides(redis_client: RedisClient) -> None:
    first, second = await _runtime(redis_client), await _runtime(redis_client)
    stored = await first.store.create(CANARY, first.registry, _prepared)
    await first.store.add_exposures(stored.id, "control", [f"u{n}" for n in range(1000)])
    await first.store.add_exposures(stored.id, "canary", [f"u{n}" for n in range(100)])
    per_group = [0] * keys.VARIANT_GROUPS  # each list counted under its user's group
    for n in range(1000):
        per_group[group(stored.id, f"u{n}")] += 1
    counters = await first.store.counters(stored.id)
    assert counters.groups("control", keys.VARIANT_EXPOSURES) == per_group
    clicked = [f"u{n}" for n in range(0, 1000, 4)]  # a quarter of the control's lists
    await redis_client.execute_many(
        [
            (
                "HINCRBY",
                PARTITIONS.of(user).experiment(stored.id),
                keys.variant_counter("control", group(stored.id, user), keys.VARIANT_CLICKS),
                1,
            )
            for user in clicked
        ]
    )
    assert await first._lock.acquire() is True  # the first replica decides from now on

    await second.check()  # figures that roll the canary back (0 of 100 clicked), no lock
    assert (await second.store.get(stored.id)).state.decision is Decision.RUNNING

    await first.stop()  # released at shutdown, not left to expire: the second decides at once
    await second.check()
    assert (await second.store.get(stored.id)).state.decision is Decision.ROLLED_BACK


@pytest.fixture
async def registry_tier(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisClient]]:
    """A Redis of its own for the registry, which a test can pause while the experiments'
    Redis answers: a promotion saved, its activation not."""
    server = RedisServer(tmp_path / "registry").start()
    client = await connect(server.url, command_timeout=0.3, name="registry")
    yield server, client
    await client.aclose()
    server.stop()


def _promoted(stored: StoredExperiment, version: int) -> decision.Outcome:
    """A canary promoted: what decide() returns once the canary has won."""
    ended = stored.state.model_copy(
        update={"decision": Decision.PROMOTED, "shares": [0.0, 1.0], "ended_at": datetime.now(UTC)}
    )
    step = ExperimentStep(at=ended.ended_at, shares=ended.shares, note="promoted: it won")
    return decision.Outcome(ended.model_copy(update={"steps": [step]}), activate=version)


async def _unanswered_promotion(
    redis_client: RedisClient, registry_tier: tuple[RedisServer, RedisClient]
) -> ExperimentRuntime:
    """A canary promoted while the registry's Redis was down (its activation refused)."""
    server, registry_client = registry_tier
    runtime, stored = await _canary_on_its_own_registry(redis_client, registry_client)
    server.stop()
    assert await runtime.apply(stored, _promoted(stored, 2))  # the experiment has ended
    server.start()
    await eventually(lambda: _answers(registry_client), within=15)  # reconnected by itself
    assert (await runtime.store.get(stored.id)).state.decision is Decision.PROMOTED
    assert await runtime.registry.active_version() == 1  # not activated
    return runtime


async def _answers(client: RedisClient) -> bool:
    try:
        return await client.ping()
    except StoreUnavailable:
        return False


async def _canary_on_its_own_registry(
    redis_client: RedisClient, registry_client: RedisClient
) -> tuple[ExperimentRuntime, StoredExperiment]:
    """Version 1 active, a canary of version 2 running; the registry on its own Redis."""
    runtime = await _runtime(redis_client)
    runtime.registry = ModelRegistry(registry_client)
    for version in (1, 2):
        await runtime.registry.record(model_info(version))
    await runtime.registry.activate(1, "passed the gate")
    return runtime, await runtime.store.create(CANARY, runtime.registry, _prepared)


async def test_a_promotion_redis_did_not_activate_is_activated_by_a_later_check(
    redis_client: RedisClient, registry_tier: tuple[RedisServer, RedisClient]
) -> None:
    runtime = await _unanswered_promotion(redis_client, registry_tier)

    await runtime.check()

    assert await runtime.registry.active_version() == 2
    assert (await runtime.registry.get(2)).status_reason.startswith("promoted by experiment")


async def test_a_version_activated_since_the_promotion_stands(
    redis_client: RedisClient, registry_tier: tuple[RedisServer, RedisClient]
) -> None:
    runtime = await _unanswered_promotion(redis_client, registry_tier)
    await runtime.registry.activate(1, "an admin's choice, after the experiment ended")

    await runtime.check()
    await runtime.check()

    assert await runtime.registry.active_version() == 1


async def test_an_activation_whose_answer_was_lost_is_not_done_again(
    redis_client: RedisClient, registry_tier: tuple[RedisServer, RedisClient]
) -> None:
    server, registry_client = registry_tier
    runtime, stored = await _canary_on_its_own_registry(redis_client, registry_client)
    with server.inspector() as registry_redis:  # the script waits out the pause, then runs
        registry_redis.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    await runtime.apply(stored, _promoted(stored, 2))
    await asyncio.sleep(1.1)
    activated_at = (await runtime.registry.get(2)).activated_at
    assert await runtime.registry.active_version() == 2

    await runtime.check()

    assert (await runtime.registry.get(2)).activated_at == activated_at  # not a second time
