"""The drift monitor: PSI, the report against a real Redis and a tiny model on disk, the trigger.

The window is counted as the feature-store's apply script counts it: each event in the hour
bucket of its user's partition, over ``PARTITIONS`` (``EVENT_PARTITIONS=3``)."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from recsys_shared import keys
from recsys_shared.artifacts import IDS_FILE, ArtifactStore, model_folder, npz_bytes
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import (
    ADMIN_ACTIVATION,
    PASSED_THE_GATE,
    ModelRegistry,
    promoted_by_experiment,
)
from recsys_shared.schemas import DriftReport, ModelInfo, SnapshotInfo
from recsys_shared.testing import DataTier, model_info
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.drift import check_drift, read_window
from retraining_worker.lock import training_lock
from retraining_worker.psi import psi, psi_from_shares, top_items_for
from retraining_worker.rollback import maybe_roll_back
from retraining_worker.selection import Plan
from retraining_worker.training import Snapshot, _register, _train_and_evaluate

from .conftest import MakeInteractions, WriteSnapshot

NOW = 1_700_003_600.0 + 1800  # half past an hour
HOUR = keys.drift_hour(NOW)
SNAPSHOT_ID = "1700000000000-0"
PARTITIONS = keys.Partitions(3)


# ── PSI ───────────────────────────────────────────────────────────────────────────────────
def test_psi_of_identical_distributions_is_zero() -> None:
    counts = {f"i{n}": float(n + 1) for n in range(20)}
    assert psi(counts, counts) == pytest.approx(0.0, abs=1e-12)
    # Proportional counts are the same distribution.
    assert psi(counts, {item: 7 * count for item, count in counts.items()}) == pytest.approx(
        0.0, abs=1e-12
    )


def test_psi_of_disjoint_distributions_is_large() -> None:
    value = psi({"a": 10, "b": 10}, {"x": 10, "y": 10}, epsilon=1e-4)
    # Each of the four bins: 0.5 against epsilon, (0.5 - 1e-4) · ln(0.5 / 1e-4) ≈ 4.26.
    assert value == pytest.approx(4 * (0.5 - 1e-4) * math.log(0.5 / 1e-4))
    assert value > 10


def test_psi_matches_a_hand_computed_value() -> None:
    # (0.25 − 0.5)·ln(0.25/0.5) + (0.75 − 0.5)·ln(0.75/0.5) = 0.25·ln 2 + 0.25·ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert expected == pytest.approx(0.274653, abs=1e-6)
    assert psi_from_shares([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    # The same through the item form: the "other" bucket is empty on both sides (ε vs ε: 0).
    assert psi({"a": 2, "b": 2}, {"a": 1, "b": 3}) == pytest.approx(expected)


def test_psi_puts_items_beyond_the_top_in_other() -> None:
    training = {"a": 50, "b": 30, "c": 10, "d": 10}
    recent = {"a": 50, "b": 30, "c": 5, "d": 15}
    # With the top 2 of each side as bins, c and d merge into "other" (20% on both sides).
    assert psi(training, recent, top=2) == pytest.approx(0.0, abs=1e-12)
    assert psi(training, recent, top=4) > 0.01


@pytest.mark.parametrize(
    ("window_events", "top"), [(0, 1), (99, 1), (1_000, 10), (2_050, 20), (5_000, 50), (10**6, 50)]
)
def test_psi_names_one_top_item_a_side_per_hundred_window_events(
    window_events: int, top: int
) -> None:
    assert top_items_for(window_events, events_per_bin=100, most=50) == top


# ── a tiny active model on disk and in the registry ───────────────────────────────────────
def _training_counts(data: Interactions) -> Counter[str]:
    return Counter(str(data.item_ids[col]) for col in data.cols)


@pytest.fixture
def drift_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "drift_window_hours": 3,
            "drift_min_events": 100,
            "drift_psi_threshold": 0.2,
            "drift_unknown_share_threshold": 0.3,
            "drift_cooldown_seconds": 600,
            "drift_top_items": 10,
            "drift_events_per_bin": 10,
            "event_partitions": PARTITIONS.count,
        }
    )


@pytest.fixture
async def active_model(
    redis_client: RedisClient,
    clusters: Interactions,
    drift_settings: Settings,
    write_snapshot: WriteSnapshot,
) -> ModelInfo:
    """Version 1, trained on the ``clusters`` snapshot."""
    return await publish_trained_on(redis_client, drift_settings, write_snapshot, clusters)


async def publish_trained_on(
    client: RedisClient, settings: Settings, write_snapshot: WriteSnapshot, data: Interactions
) -> ModelInfo:
    """Version 1, active, trained on ``data``: the snapshot bundle and the model's id tables
    written with the ArtifactStore as the feature-store and training write them."""
    store = ArtifactStore(settings.artifact_url)
    write_snapshot(store, SNAPSHOT_ID, data)
    store.write_bundle(
        model_folder(1),
        {IDS_FILE: npz_bytes(user_ids=data.user_ids, item_ids=data.item_ids)},
        {"version": 1},
    )
    info = model_info(1, snapshot_id=SNAPSHOT_ID, artifact_url=store.url(model_folder(1)))
    await ModelRegistry(client).publish(info, reason="test")
    return info


async def record_window(
    client: RedisClient,
    events: list[tuple[str, str, str]],
    *,
    hour: int = HOUR,
    hits: dict[str, int] | None = None,
    hits_partition: keys.Partition = PARTITIONS.all[-1],
) -> None:
    """Count (user, item, type) events into the hour bucket of each user's partition, as the
    feature-store's script does; ``hits`` (hit-rate counters) into ``hits_partition``'s."""
    commands: list[tuple[str, str, str, int]] = []
    for user, item, kind in events:
        bucket = PARTITIONS.of(user).drift(hour)
        commands += [
            ("HINCRBY", bucket.users, user, 1),
            ("HINCRBY", bucket.items, item, 1),
            ("HINCRBY", bucket.types, kind, 1),
        ]
    for name, count in (hits or {}).items():
        commands.append(("HINCRBY", hits_partition.drift(hour).hits, name, count))
    await client.execute_many(commands)


def like_training(data: Interactions, repeat: int = 1) -> list[tuple[str, str, str]]:
    """Events with the training snapshot's own user and item distribution."""
    return [
        (str(data.user_ids[row]), str(data.item_ids[col]), "like")
        for _ in range(repeat)
        for row, col in zip(data.rows, data.cols, strict=True)
    ]


def new_traffic(count: int) -> list[tuple[str, str, str]]:
    return [(f"new-user-{n % 50}", f"new-item-{n % 30}", "view") for n in range(count)]


class Sender:
    """Stands in for Celery's send_task: records each enqueue."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self) -> str:
        self.sent.append(f"task-{len(self.sent) + 1}")
        return self.sent[-1]


async def run(
    client: RedisClient, settings: Settings, send: Sender, now: float = NOW
) -> DriftReport:
    return await check_drift(client, ArtifactStore(settings.artifact_url), settings, send, now=now)


async def assert_nothing_enqueued(client: RedisClient, send: Sender) -> None:
    """No retrain was sent, and no cool-down was taken for one."""
    assert send.sent == []
    assert not await client.execute("EXISTS", keys.DRIFT_RETRAIN_COOLDOWN)


# ── the report ────────────────────────────────────────────────────────────────────────────
async def test_traffic_like_the_training_data_is_ok(
    redis_client: RedisClient,
    clusters: Interactions,
    drift_settings: Settings,
    active_model: ModelInfo,
) -> None:
    # Spread over two buckets of the window; one bucket before the window must not count.
    events = like_training(clusters)
    await record_window(redis_client, events[:200], hour=HOUR - 1)
    await record_window(
        redis_client,
        events[200:],
        hits={"1:events": 40, "1:hits": 10, "popular:events": 10, "popular:hits": 1},
    )
    await record_window(redis_client, new_traffic(1000), hour=HOUR - 3)
    await redis_client.execute("HINCRBY", PARTITIONS.all[1].drift(HOUR).types, "view", 160)
    send = Sender()

    report = await run(redis_client, drift_settings, send)

    assert report.status == "ok", report.reasons
    assert report.model_version == 1
    assert report.snapshot_id == SNAPSHOT_ID
    assert report.events == len(events) + 160
    assert report.window_hours == 3
    assert report.window_start == datetime.fromtimestamp((HOUR - 2) * 3600, UTC)
    assert report.psi == pytest.approx(0.0, abs=1e-9)
    assert report.unknown_user_share == 0.0
    assert report.unknown_item_share == 0.0
    assert report.event_types == pytest.approx({"like": 480 / 640, "view": 160 / 640})
    assert report.hit_rate["1"].model_dump() == {"events": 40, "hits": 10, "hit_rate": 0.25}
    assert report.hit_rate["popular"].hit_rate == pytest.approx(0.1)
    assert report.reasons == []
    assert report.triggered_task_id is None
    assert send.sent == []


@pytest.fixture
async def all_new_traffic(redis_client: RedisClient) -> None:
    """A window of 500 events, every one from a new user on a new item."""
    await record_window(redis_client, new_traffic(500))


@pytest.fixture
async def half_new_traffic(
    redis_client: RedisClient, clusters: Interactions, active_model: ModelInfo
) -> None:
    """A window of the training traffic and as many events again (480) from new users on new
    items, with the active model."""
    await record_window(redis_client, like_training(clusters) + new_traffic(480))


@pytest.mark.usefixtures("half_new_traffic")
async def test_new_users_and_items_are_drift(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    report = await run(redis_client, drift_settings, Sender())

    assert report.status == "drift"
    assert report.unknown_user_share == pytest.approx(0.5)
    assert report.unknown_item_share == pytest.approx(0.5)
    assert report.psi is not None
    assert report.psi > drift_settings.drift_psi_threshold
    assert len(report.reasons) == 3
    assert any("PSI" in reason for reason in report.reasons)


async def test_a_shift_among_known_items_is_caught_by_psi_alone(
    redis_client: RedisClient,
    clusters: Interactions,
    drift_settings: Settings,
    active_model: ModelInfo,
) -> None:
    # Known users, known items, but everyone piles onto the two least popular training items.
    counts = _training_counts(clusters)
    rare = [item for item, _ in counts.most_common()[-2:]]
    users = [str(user) for user in clusters.user_ids]
    await record_window(
        redis_client, [(users[n % len(users)], rare[n % 2], "click") for n in range(300)]
    )

    report = await run(redis_client, drift_settings, Sender())

    assert report.status == "drift"
    assert report.unknown_user_share == 0.0
    assert report.unknown_item_share == 0.0
    assert report.psi is not None
    assert report.psi > 1.0
    assert len(report.reasons) == 1
    assert "PSI" in report.reasons[0]


@pytest.mark.parametrize(
    ("factor", "reference", "status"), [(1, 100, "ok"), (0, 500, "drift")], ids=["newest", "all"]
)
async def test_psi_compares_the_window_with_the_newest_training_interactions(
    redis_client: RedisClient,
    drift_settings: Settings,
    write_snapshot: WriteSnapshot,
    make_interactions: MakeInteractions,
    factor: int,
    reference: int,
    status: str,
) -> None:
    """Popularity moved while the training data accumulated: its oldest 400 interactions are
    on items 0-9, its newest 100 on items 10-19, and traffic goes on like the newest. Against
    the newest slice that is no drift; against the whole history (factor 0) it always is."""
    old = [(n % 40, n % 10) for n in range(400)]
    new = [(n % 40, 10 + n % 10) for n in range(100)]
    rows, cols = zip(*old, *new, strict=True)
    data = make_interactions(list(rows), list(cols), times=list(range(500)))
    await publish_trained_on(redis_client, drift_settings, write_snapshot, data)
    await record_window(
        redis_client, [(f"u{n % 40}", f"i{10 + n % 10}", "view") for n in range(100)]
    )
    settings = drift_settings.model_copy(update={"drift_reference_factor": factor})

    report = await run(redis_client, settings, Sender())

    assert report.psi_reference == reference
    assert report.status == status, report.reasons
    assert report.psi is not None
    if status == "ok":
        assert report.psi == pytest.approx(0.0, abs=1e-9)
    else:
        assert report.psi > settings.drift_psi_threshold


def long_tail_sample(generator: np.random.Generator, count: int) -> npt.NDArray[np.int64]:
    """``count`` item indices from a long-tail (Zipf-like) distribution over 5,000 items."""
    weights = 1.0 / np.arange(1, 5_001) ** 0.6
    return generator.choice(5_000, size=count, p=weights / weights.sum())


@pytest.mark.parametrize("shifted", [False, True])
async def test_a_small_window_is_judged_on_bins_its_size_supports(
    redis_client: RedisClient,
    drift_settings: Settings,
    write_snapshot: WriteSnapshot,
    make_interactions: MakeInteractions,
    shifted: bool,
) -> None:
    """1,000 events drawn from the training data's own long-tail distribution are no drift,
    though 50 bins a side would read chance alone as drift; a fifth of them moved to 20 items
    of the tail is."""
    generator = np.random.default_rng(3)
    trained = long_tail_sample(generator, 4_000)
    data = make_interactions([n % 400 for n in range(4_000)], trained.tolist(), n_items=5_000)
    await publish_trained_on(redis_client, drift_settings, write_snapshot, data)
    window = long_tail_sample(generator, 1_000)
    if shifted:
        window[:200] = 200 + generator.integers(0, 20, size=200)
    events = [(f"u{n % 400}", f"i{item}", "view") for n, item in enumerate(window)]
    await record_window(redis_client, events)
    settings = drift_settings.model_copy(
        update={"drift_min_events": 1_000, "drift_top_items": 50, "drift_events_per_bin": 100}
    )

    report = await run(redis_client, settings, Sender())

    assert report.psi_top_items == 10
    assert report.psi is not None
    if shifted:
        assert report.status == "drift"
        assert report.reasons[0].startswith("item popularity PSI"), report.reasons
    else:
        assert report.status == "ok", report.reasons
        assert report.psi < settings.drift_psi_threshold / 4
        # What 50 bins a side made of the same two samples: drift, by chance alone.
        fixed = psi(_training_counts(data), Counter(f"i{item}" for item in window), top=50)
        assert fixed > settings.drift_psi_threshold


async def test_too_few_events_never_trigger(
    redis_client: RedisClient, drift_settings: Settings, active_model: ModelInfo
) -> None:
    await record_window(redis_client, new_traffic(99))
    send = Sender()

    report = await run(redis_client, drift_settings, send)

    assert report.status == "insufficient_data"
    assert report.unknown_item_share == 1.0  # still reported, only not acted on
    assert report.triggered_task_id is None
    await assert_nothing_enqueued(redis_client, send)


@pytest.mark.usefixtures("all_new_traffic")
async def test_without_an_active_model_there_is_no_verdict(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    send = Sender()

    report = await run(redis_client, drift_settings, send)

    assert report.status == "no_model"
    assert report.events == 500
    assert report.psi is None
    assert send.sent == []


@pytest.mark.usefixtures("half_new_traffic")
async def test_a_garbage_collected_snapshot_still_reports_unknown_shares(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    ArtifactStore(drift_settings.artifact_url).delete_tree(f"snapshots/{SNAPSHOT_ID}")

    report = await run(redis_client, drift_settings, Sender())

    assert report.psi is None
    assert report.unknown_item_share == pytest.approx(0.5)
    assert report.status == "drift"


# ── the trigger and the history ───────────────────────────────────────────────────────────
@pytest.mark.usefixtures("all_new_traffic")
async def test_drift_triggers_one_retrain_per_cool_down(
    redis_client: RedisClient, drift_settings: Settings, active_model: ModelInfo
) -> None:
    send = Sender()

    first = await run(redis_client, drift_settings, send)
    second = await run(redis_client, drift_settings, send, now=NOW + 60)
    other_monitor = await run(redis_client, drift_settings, Sender(), now=NOW + 61)

    assert first.status == second.status == other_monitor.status == "drift"
    assert send.sent == ["task-1"]
    assert first.triggered_task_id == "task-1"
    assert second.triggered_task_id is None
    assert second.trigger_skipped is not None
    assert "cool-down" in second.trigger_skipped
    assert "task-1" in second.trigger_skipped
    assert other_monitor.triggered_task_id is None
    assert await redis_client.execute("GET", keys.DRIFT_RETRAIN_COOLDOWN) == "task-1"
    assert 0 < await redis_client.execute("TTL", keys.DRIFT_RETRAIN_COOLDOWN) <= 600

    # After the cool-down, drift that persists triggers again.
    await redis_client.execute("DEL", keys.DRIFT_RETRAIN_COOLDOWN)
    third = await run(redis_client, drift_settings, send, now=NOW + 700)
    assert third.triggered_task_id == "task-2"


async def test_below_the_thresholds_nothing_is_enqueued(
    redis_client: RedisClient,
    clusters: Interactions,
    drift_settings: Settings,
    active_model: ModelInfo,
) -> None:
    # 20% of the traffic from new users on new items: under the 30% threshold.
    await record_window(redis_client, like_training(clusters) + new_traffic(120))
    lenient = drift_settings.model_copy(update={"drift_psi_threshold": 5.0})
    send = Sender()

    report = await run(redis_client, lenient, send)

    assert report.status == "ok"
    assert report.unknown_user_share == pytest.approx(0.2)
    await assert_nothing_enqueued(redis_client, send)


@pytest.mark.usefixtures("all_new_traffic")
async def test_no_trigger_while_a_training_runs(
    redis_client: RedisClient, drift_settings: Settings, active_model: ModelInfo
) -> None:
    await redis_client.execute("SET", keys.TRAINING_LOCK, "someone", "EX", 60)
    send = Sender()

    report = await run(redis_client, drift_settings, send)

    assert report.status == "drift"
    assert report.trigger_skipped == "a training is running"
    await assert_nothing_enqueued(redis_client, send)


@pytest.mark.usefixtures("all_new_traffic")
async def test_a_failed_enqueue_releases_the_cool_down(
    redis_client: RedisClient, drift_settings: Settings, active_model: ModelInfo
) -> None:
    def broken() -> str:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await run(redis_client, drift_settings, broken)  # type: ignore[arg-type]

    assert not await redis_client.execute("EXISTS", keys.DRIFT_RETRAIN_COOLDOWN)
    assert (await run(redis_client, drift_settings, Sender())).triggered_task_id == "task-1"


async def test_reports_are_kept_newest_first_in_a_capped_history(
    redis_client: RedisClient, drift_settings: Settings, active_model: ModelInfo
) -> None:
    await record_window(redis_client, new_traffic(10))
    for offset in range(keys.DRIFT_HISTORY_LENGTH + 5):
        await run(redis_client, drift_settings, Sender(), now=NOW + offset)

    history = await redis_client.execute("LRANGE", keys.DRIFT_HISTORY, 0, -1)
    latest = DriftReport.model_validate_json(await redis_client.execute("GET", keys.DRIFT_LATEST))

    assert len(history) == keys.DRIFT_HISTORY_LENGTH
    assert DriftReport.model_validate_json(history[0]) == latest
    assert latest.checked_at == datetime.fromtimestamp(NOW + keys.DRIFT_HISTORY_LENGTH + 4, UTC)
    assert DriftReport.model_validate_json(history[-1]).checked_at == datetime.fromtimestamp(
        NOW + 5, UTC
    )


# ── automatic rollback ────────────────────────────────────────────────────────────────────
def _report(hits: dict[str, tuple[int, int]]) -> DriftReport:
    from recsys_shared.schemas import OnlineHitRate

    now = datetime.now(UTC)
    return DriftReport(
        status="ok",
        checked_at=now,
        window_hours=24,
        window_start=now,
        events=1000,
        hit_rate={
            version: OnlineHitRate(events=events, hits=hit, hit_rate=hit / events)
            for version, (events, hit) in hits.items()
        },
    )


#: The activation reasons the registry records (``rollback.py`` reads them).
EXPERIMENT = promoted_by_experiment("7", "a better canary")
ADMIN = ADMIN_ACTIVATION  # the gateway's POST /v1/models/{v}/activate


async def _chain(redis_client: RedisClient, *activations: int) -> ModelRegistry:
    """Versions 1..max recorded with artifacts, then activated in the order given, each as a
    training publishes a version that passed the gate."""
    registry = ModelRegistry(redis_client)
    for version in range(1, max(activations) + 1):
        await _record(registry, version)
    for version in activations:
        await registry.activate(version, PASSED_THE_GATE)
    return registry


async def _record(registry: ModelRegistry, version: int) -> None:
    await registry.record(model_info(version, snapshot_id=f"{version}-0.g0"))


async def _roll_back(
    registry: ModelRegistry,
    hits: dict[str, tuple[int, int]],
    settings: Settings,
    now: float | None = None,
) -> str | None:
    """The rollback check of the active version on a report of these (events, hits), at
    ``now`` (by default: just after the activation)."""
    active = await registry.active()
    assert active is not None
    when = datetime.now(UTC).timestamp() if now is None else now
    return await maybe_roll_back(registry, _report(hits), active, settings, now=when)


async def test_a_promoted_version_with_a_falling_hit_rate_is_rolled_back(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2)  # 1 is now retired, replaced by 2

    reason = await _roll_back(registry, {"1": (300, 60), "2": (300, 30)}, drift_settings)

    assert reason is not None
    assert "version 2" in reason
    assert await registry.active_version() == 1


@pytest.mark.parametrize(
    "hits",
    [
        {"1": (300, 60), "2": (300, 55)},  # within the margin
        {"1": (300, 60), "2": (50, 1)},  # too few events to judge
        {"2": (300, 1)},  # nothing to compare with
    ],
)
async def test_no_rollback_without_a_clear_loss(
    redis_client: RedisClient, drift_settings: Settings, hits: dict[str, tuple[int, int]]
) -> None:
    registry = await _chain(redis_client, 1, 2)

    assert await _roll_back(registry, hits, drift_settings) is None
    assert await registry.active_version() == 2


async def test_an_old_promotion_is_not_rolled_back(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2)
    later = datetime.now(UTC).timestamp() + drift_settings.rollback_window_seconds + 1

    assert (
        await _roll_back(registry, {"1": (300, 60), "2": (300, 1)}, drift_settings, later) is None
    )


async def test_a_rollback_goes_to_the_version_the_active_one_replaced(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2, 3)
    assert (await registry.get(2)).replaced_by == 3
    assert (await registry.get(1)).replaced_by == 2

    # 1 did best of all, but 3 replaced 2: the comparison and the rollback are with 2.
    reason = await _roll_back(
        registry, {"1": (300, 150), "2": (300, 60), "3": (300, 30)}, drift_settings
    )

    assert reason is not None
    assert "version 3" in reason
    assert "version 2" in reason
    assert await registry.active_version() == 2


async def test_after_a_reactivation_the_rollback_goes_to_the_version_replaced_last(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    # 3 replaced 2, was rolled back to 1 by hand, then promoted again by an experiment: it
    # replaced 1 last (2 still names 3 as its successor, from the first time).
    registry = await _chain(redis_client, 1, 2, 3)
    await registry.activate(1, ADMIN)
    await registry.activate(3, EXPERIMENT, rejected_too=True)
    assert (await registry.get(1)).replaced_by == 3

    reason = await _roll_back(
        registry, {"1": (300, 60), "2": (300, 10), "3": (300, 30)}, drift_settings
    )

    assert reason is not None
    assert "version 1" in reason
    assert await registry.active_version() == 1


async def test_no_rollback_to_a_version_whose_artifact_was_pruned(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2)
    await registry.drop_artifact(1)

    assert await _roll_back(registry, {"1": (300, 60), "2": (300, 1)}, drift_settings) is None
    assert await registry.active_version() == 2


async def test_a_rollback_is_not_undone_by_the_next_check(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    """1 → 2 → 3 promoted, 3 rolled back to 2. Version 2 is then freshly activated and names
    3 as the version it replaced, and 3 still gains hits from the lists it served: judging 2
    against it re-activated the version the monitor had just removed."""
    registry = await _chain(redis_client, 1, 2, 3)
    assert await _roll_back(registry, {"2": (300, 30), "3": (300, 10)}, drift_settings)
    assert await registry.active_version() == 2

    # 0.040 against 0.053: past the margin, but 2 was activated by a rollback.
    assert await _roll_back(registry, {"2": (300, 12), "3": (300, 16)}, drift_settings) is None
    assert await registry.active_version() == 2


async def test_an_admins_rollback_is_not_reversed(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2, 3)
    await registry.activate(2, ADMIN)  # by hand from 3 back to 2, which then trails 3

    assert await _roll_back(registry, {"2": (300, 12), "3": (300, 30)}, drift_settings) is None
    assert await registry.active_version() == 2


async def test_an_admins_reactivation_of_a_rolled_back_version_is_not_reversed(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2)
    assert await _roll_back(registry, {"1": (300, 60), "2": (300, 30)}, drift_settings)
    await registry.activate(2, ADMIN)  # the admin wants 2 all the same: it still trails 1

    assert await _roll_back(registry, {"1": (300, 60), "2": (300, 30)}, drift_settings) is None
    assert await registry.active_version() == 2


async def test_an_experiments_promotion_that_does_worse_is_rolled_back(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1)
    await _record(registry, 2)
    await registry.activate(2, EXPERIMENT, rejected_too=True)

    reason = await _roll_back(registry, {"1": (300, 60), "2": (300, 30)}, drift_settings)

    assert reason is not None
    assert await registry.active_version() == 1


async def test_a_promotion_after_a_rollback_is_judged_against_what_it_replaced(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    # 3 rolled back to 2, then 4 published: 4 replaced 2, not 3 (which 2 had replaced).
    registry = await _chain(redis_client, 1, 2, 3)
    assert await _roll_back(registry, {"2": (300, 30), "3": (300, 10)}, drift_settings)
    await _record(registry, 4)
    await registry.activate(4, PASSED_THE_GATE)
    hits = {"2": (300, 15), "3": (300, 60), "4": (300, 14)}

    assert await _roll_back(registry, hits, drift_settings) is None  # it only trails 3
    hits["4"] = (300, 6)
    assert await _roll_back(registry, hits, drift_settings)
    assert await registry.active_version() == 2


async def test_an_activation_made_since_the_check_read_the_registry_is_kept(
    redis_client: RedisClient, drift_settings: Settings
) -> None:
    registry = await _chain(redis_client, 1, 2, 3)
    seen = await registry.active()  # what the check read, before an admin's rollback to 1
    assert seen is not None
    await registry.activate(1, ADMIN)
    # 3 trails 2, which still names 3 as its successor: the stale record would go there.
    report = _report({"1": (300, 30), "2": (300, 60), "3": (300, 30)})

    assert await maybe_roll_back(registry, report, seen, drift_settings, now=time.time()) is None
    assert await registry.active_version() == 1


async def test_a_version_a_training_published_is_judged(
    redis_client: RedisClient,
    clusters: Interactions,
    drift_settings: Settings,
    snapshot: SnapshotInfo,
) -> None:
    """Through the training's own publish: its activation reason is one rollback.py knows."""
    registry = ModelRegistry(redis_client)
    store = ArtifactStore(drift_settings.artifact_url)
    data = Snapshot(clusters, None, None)
    for version in (1, 2):
        outcome, info, served = _train_and_evaluate(
            data, Plan(search=False, algorithm="als"), None, drift_settings, snapshot, version
        )
        async with training_lock(redis_client, ttl_seconds=30) as held:
            await _register(registry, store, drift_settings, held, outcome, info, served, data)
    assert await registry.active_version() == 2

    assert await _roll_back(registry, {"1": (300, 60), "2": (300, 30)}, drift_settings)
    assert await registry.active_version() == 1


# ── partitions ────────────────────────────────────────────────────────────────────────────
async def test_the_window_sums_the_hour_buckets_of_every_partition(data_tier: DataTier) -> None:
    redis_client = await connect(data_tier.url)  # partitions on several masters of a cluster
    try:
        await _sum_every_partition(redis_client)
    finally:
        await redis_client.aclose()


async def _sum_every_partition(redis_client: RedisClient) -> None:
    for number, partition in enumerate(PARTITIONS.all):
        for hour in (HOUR - 1, HOUR, HOUR - 5):  # the last is outside a 2-hour window
            bucket = partition.drift(hour)
            await redis_client.execute_many(
                [
                    ("HINCRBY", bucket.items, "everywhere", number + 1),
                    ("HINCRBY", bucket.items, f"only-in-p{number}", 1),
                    ("HINCRBY", bucket.users, f"user-of-p{number}", number + 2),
                    ("HINCRBY", bucket.types, "view", number + 2),
                    ("HINCRBY", bucket.hits, "1:events", 10),
                    ("HINCRBY", bucket.hits, "1:hits", number),
                ]
            )

    window = await read_window(redis_client, PARTITIONS, now=NOW, hours=2)

    assert window.items == {"everywhere": 2 * 6, "only-in-p0": 2, "only-in-p1": 2, "only-in-p2": 2}
    assert window.users == {"user-of-p0": 4, "user-of-p1": 6, "user-of-p2": 8}
    assert window.types == {"view": 2 * 9}
    assert window.events == 18
    assert window.hits["1"].model_dump() == {"events": 60, "hits": 6, "hit_rate": 0.1}
    # A monitor told of one partition reads that one only: the sum is over partitions.
    alone = await read_window(redis_client, keys.Partitions(1), now=NOW, hours=2)
    assert alone.items == {"everywhere": 2, "only-in-p0": 2}
