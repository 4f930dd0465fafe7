"""The experiment runtime on a real Redis: one replica decides, ended experiments are
forgotten after their retention, a stop and a decision cannot both win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.experiments import ExperimentRuntime
from recsys_shared import keys
from recsys_shared.experiments import decision
from recsys_shared.experiments.assignment import group
from recsys_shared.experiments.store import ExperimentStore
from recsys_shared.redis import RedisClient
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Decision, ExperimentIn
from recsys_shared.testing import model_info

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
