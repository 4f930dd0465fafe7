"""The training lock, against a real redis-server: one training at a time, renewed while held,
and a training whose lock was lost never publishes.

The whole training runs against a fake feature-store at the transport (a real HTTP server
answering ``POST /snapshots`` with a snapshot bundle written beforehand).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from recsys_shared import keys
from recsys_shared.artifacts import ArtifactStore
from recsys_shared.processes import RedisServer, free_port, wait_until
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import SnapshotInfo
from recsys_shared.testing import eventually
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.lock import TrainingLocked, TrainingLockLost, training_lock
from retraining_worker.training import run_training

from .conftest import WriteSnapshot

LOCK_LOST = "recsys_training_lock_lost_total"


def _lost_count() -> float:
    return REGISTRY.get_sample_value(LOCK_LOST) or 0.0


async def _exists(client: RedisClient, key: str) -> bool:
    return bool(await client.execute("EXISTS", key))


# ── the lock itself ───────────────────────────────────────────────────────────────────────
async def test_second_acquisition_while_held_is_refused(redis_client: RedisClient) -> None:
    async with training_lock(redis_client, ttl_seconds=30):
        with pytest.raises(TrainingLocked):
            async with training_lock(redis_client, ttl_seconds=30):
                pytest.fail("a second holder entered the lock")
        # The failed attempt did not take the lock away from its holder.
        assert await _exists(redis_client, keys.TRAINING_LOCK)

    assert not await _exists(redis_client, keys.TRAINING_LOCK)
    async with training_lock(redis_client, ttl_seconds=30):
        assert await _exists(redis_client, keys.TRAINING_LOCK)


async def test_lock_key_has_a_ttl(redis_client: RedisClient) -> None:
    async with training_lock(redis_client, ttl_seconds=30):
        ttl = await redis_client.execute("TTL", keys.TRAINING_LOCK)
        assert 0 < ttl <= 30


async def test_lock_is_released_when_the_body_fails(redis_client: RedisClient) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with training_lock(redis_client, ttl_seconds=30):
            raise RuntimeError("boom")

    assert not await _exists(redis_client, keys.TRAINING_LOCK)


async def test_lock_owned_by_another_token_is_not_deleted(redis_client: RedisClient) -> None:
    async with training_lock(redis_client, ttl_seconds=30):
        # As if our lock had expired and another worker had taken it.
        await redis_client.execute("SET", keys.TRAINING_LOCK, "another-worker", "EX", 30)

    assert await redis_client.execute("GET", keys.TRAINING_LOCK) == "another-worker"
    with pytest.raises(TrainingLocked):
        async with training_lock(redis_client, ttl_seconds=30):
            pytest.fail("entered a lock another worker holds")


async def test_lock_is_renewed_while_held(redis_client: RedisClient) -> None:
    async with training_lock(redis_client, ttl_seconds=1) as held:
        # Longer than the TTL: without renewal the key would have expired.
        await asyncio.sleep(1.6)
        assert await _exists(redis_client, keys.TRAINING_LOCK)
        assert 0 < await redis_client.execute("PTTL", keys.TRAINING_LOCK) <= 1000
        assert not held.lost
        held.check()  # does not raise

    assert not await _exists(redis_client, keys.TRAINING_LOCK)


async def test_a_renewal_that_finds_the_lock_taken_marks_it_lost(
    redis_client: RedisClient,
) -> None:
    lost_before = _lost_count()
    async with training_lock(redis_client, ttl_seconds=1) as held:
        await redis_client.execute("SET", keys.TRAINING_LOCK, "another-worker", "EX", 30)

        async def lost() -> bool:
            return held.lost

        await eventually(lost)
        with pytest.raises(TrainingLockLost):
            held.check()

    assert _lost_count() == lost_before + 1
    # The other holder keeps its lock.
    assert await redis_client.execute("GET", keys.TRAINING_LOCK) == "another-worker"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop under a held lock."""
    server = RedisServer(tmp_path / "redis", durable=False).start()
    yield server
    server.stop()


async def test_a_lock_not_renewed_for_a_whole_ttl_is_lost(own_redis: RedisServer) -> None:
    client = await connect(own_redis.url, command_timeout=0.2)
    lost_before = _lost_count()
    try:
        async with training_lock(client, ttl_seconds=1) as held:
            own_redis.stop()  # every renewal from now on fails: Redis cannot be reached

            async def lost() -> bool:
                return held.lost

            await eventually(lost, within=10)
            with pytest.raises(TrainingLockLost):
                held.check()
        # Leaving the block did not try to release a lock it no longer holds (Redis is down:
        # that would have raised).
    finally:
        await client.aclose()
    assert _lost_count() == lost_before + 1


# ── a whole training around the lock ──────────────────────────────────────────────────────
SNAPSHOT_ID = "1700000000000-0.g0"


class FakeFeatureStore:
    """``POST /snapshots`` answered with ``snapshot``; ``before_answer`` runs first, in the
    server's thread (it may hold the answer back)."""

    def __init__(self, snapshot: SnapshotInfo) -> None:
        self.snapshot = snapshot
        self.before_answer: Callable[[], None] = lambda: None
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake.requests += 1
                fake.before_answer()
                body = fake.snapshot.model_dump_json().encode()
                self.send_response(200 if self.path == "/snapshots" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feature_store(
    clusters: Interactions, settings: Settings, write_snapshot: WriteSnapshot
) -> Iterator[FakeFeatureStore]:
    """The ``clusters`` snapshot written as the feature-store writes one, and a fake
    feature-store that hands it out."""
    info = write_snapshot(ArtifactStore(settings.artifact_url), SNAPSHOT_ID, clusters)
    fake = FakeFeatureStore(info)
    yield fake
    fake.close()


@pytest.fixture
def training_settings(
    settings: Settings, redis_url: str, feature_store: FakeFeatureStore
) -> Settings:
    return Settings(
        **{
            **settings.model_dump(exclude={"redis_url"}),
            "redis_url": redis_url,
            "feature_store_url": feature_store.url,
            "lock_ttl_seconds": 5,  # renewed every 5/3 s
            # The first training searches recipes: a short search, well inside the test.
            "training_budget_seconds": 5,
            "search_max_trials": 3,
        }
    )


async def test_a_training_publishes_and_releases_its_lock(
    training_settings: Settings, redis_client: RedisClient
) -> None:
    outcome = await run_training(training_settings)

    assert outcome.status == "published", outcome.reasons
    registry = ModelRegistry(redis_client)
    assert await registry.active_version() == outcome.version
    assert not await _exists(redis_client, keys.TRAINING_LOCK)


async def test_a_training_while_another_runs_does_nothing_and_says_locked(
    training_settings: Settings,
    feature_store: FakeFeatureStore,
    redis_client: RedisClient,
    inspector: redis.Redis,
) -> None:
    """The second of two trainings at once: it asks for no snapshot, publishes nothing and
    raises TrainingLocked, which the task turns into a retry ``LOCKED_RETRY_SECONDS`` later."""
    inspector.set(keys.TRAINING_LOCK, "another-worker", ex=60)

    with pytest.raises(TrainingLocked):
        await run_training(training_settings)

    assert feature_store.requests == 0
    assert await ModelRegistry(redis_client).active_version() is None
    assert inspector.get(keys.TRAINING_LOCK) == "another-worker"


async def test_a_training_whose_lock_was_lost_publishes_nothing(
    training_settings: Settings,
    feature_store: FakeFeatureStore,
    redis_client: RedisClient,
    inspector: redis.Redis,
) -> None:
    lost_before = _lost_count()

    def lose_the_lock() -> None:
        # Another worker takes the lock while this training waits for its snapshot; the
        # answer comes once a renewal has found out.
        inspector.set(keys.TRAINING_LOCK, "another-worker", ex=60)
        wait_until(lambda: _lost_count() > lost_before, timeout=15, what="the lock to be lost")

    feature_store.before_answer = lose_the_lock
    registry = ModelRegistry(redis_client)

    with pytest.raises(TrainingLockLost):
        await run_training(training_settings)

    assert feature_store.requests == 1
    assert await registry.active_version() is None
    assert await registry.list() == []
    assert inspector.get(keys.TRAINING_LOCK) == "another-worker"
    assert ArtifactStore(training_settings.artifact_url).list_dirs("models") == []


async def test_a_lock_taken_before_its_renewal_noticed_is_caught_by_the_registry(
    training_settings: Settings,
    feature_store: FakeFeatureStore,
    redis_client: RedisClient,
    inspector: redis.Redis,
) -> None:
    """The lock expires and another worker takes it while the renewer sleeps (a long time to
    live: no renewal runs during this training), so every check passes: the registry's
    fenced record is what refuses the publish."""
    lost_before = _lost_count()
    settings = training_settings.model_copy(update={"lock_ttl_seconds": 600})
    feature_store.before_answer = lambda: inspector.set(keys.TRAINING_LOCK, "another-worker", ex=60)
    registry = ModelRegistry(redis_client)

    with pytest.raises(TrainingLockLost):
        await run_training(settings)

    assert await registry.active_version() is None
    assert await registry.list() == []
    assert inspector.get(keys.TRAINING_LOCK) == "another-worker"
    assert _lost_count() == lost_before + 1
