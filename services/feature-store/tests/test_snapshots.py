"""Snapshots: the interaction arrays, the data-quality gate and the idempotent export."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from feature_store.catalogue import Catalogue
from feature_store.config import Settings
from feature_store.erasure import Eraser
from feature_store.snapshots import (
    Interactions,
    check_quality,
    read_interactions,
    take_snapshot,
)
from feature_store.traffic_window import (
    MIN_WINDOW_EVENTS,
    Baseline,
    Window,
    choose_window,
    read_baselines,
    share_checks,
)
from recsys_shared import keys
from recsys_shared.artifacts import MANIFEST, SNAPSHOT_FILE, ArtifactStore, load_npz
from recsys_shared.schemas import (
    EventType,
    ItemWithId,
    QualityCheck,
    SnapshotInfo,
    TrafficCounts,
)

PARTITIONS = keys.Partitions(1)
P0 = PARTITIONS.all[0]

# ── read_interactions / arrays ───────────────────────────────────────────────────────────


async def test_read_interactions_gives_consistent_arrays(
    redis_client, sync_redis, stream, applier, make_event, base_ts
):
    events = [
        make_event("u2", "b", EventType.CLICK, ts=base_ts + 1),
        make_event("u1", "a", EventType.VIEW, ts=base_ts + 2),
        make_event("u1", "b", EventType.PURCHASE, ts=base_ts + 3),
        make_event("u1", "a", EventType.LIKE, ts=base_ts + 4),
        make_event("u3", "c", EventType.RATING, value=1.0, ts=base_ts + 5),
        make_event("u3", "a", EventType.RATING, value=4.0, ts=base_ts + 6),
    ]
    await applier.apply(P0, await stream.deliver(events), now=1.0)
    sync_redis.zadd(P0.users, {"ghost": 1.0})  # listed, but no history: left out
    expected = {
        ("u1", "a"): (5.0, base_ts + 4),
        ("u1", "b"): (5.0, base_ts + 3),
        ("u2", "b"): (2.0, base_ts + 1),
        ("u3", "c"): (-1.5, base_ts + 5),  # a low rating: negative evidence
        ("u3", "a"): (1.5, base_ts + 6),
    }

    interactions = await read_interactions(redis_client, PARTITIONS)
    arrays = interactions.arrays()

    # Users by id, whatever order the partition lists them in (by when last heard from).
    assert sync_redis.zrange(P0.users, 0, -1) == ["ghost", "u2", "u1", "u3"]
    assert list(arrays["user_ids"]) == ["u1", "u2", "u3"]
    assert sorted(arrays["item_ids"]) == ["a", "b", "c"]
    assert arrays["rows"].dtype == np.int32
    assert arrays["cols"].dtype == np.int32
    assert arrays["weights"].dtype == np.float32
    assert arrays["times"].dtype == np.float64
    n = len(expected)
    assert {name: len(array) for name, array in arrays.items()} == {
        "user_ids": 3,
        "item_ids": 3,
        "rows": n,
        "cols": n,
        "weights": n,
        "times": n,
    }
    found = {}
    for row, col, weight, moment in zip(
        arrays["rows"], arrays["cols"], arrays["weights"], arrays["times"], strict=True
    ):
        pair = (str(arrays["user_ids"][row]), str(arrays["item_ids"][col]))
        assert pair not in found
        found[pair] = (float(weight), float(moment))
    assert found == expected


async def test_read_interactions_is_deterministic_and_empty_without_users(
    redis_client, stream, applier, make_event
):
    empty = await read_interactions(redis_client, PARTITIONS)
    assert (len(empty.user_ids), len(empty.item_ids), len(empty.rows)) == (0, 0, 0)
    assert {name: len(array) for name, array in empty.arrays().items()} == dict.fromkeys(
        ("user_ids", "item_ids", "rows", "cols", "weights", "times"), 0
    )

    await applier.apply(
        P0, await stream.deliver([make_event(f"u{n}", f"i{n % 3}") for n in range(12)]), now=1.0
    )
    first = (await read_interactions(redis_client, PARTITIONS)).arrays()
    second = (await read_interactions(redis_client, PARTITIONS)).arrays()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


# ── check_quality ─────────────────────────────────────────────────────────────────────────


def build(
    n_users: int = 25,
    n_items: int = 20,
    per_user: int = 10,
    *,
    times: float | None = None,
) -> Interactions:
    """Users spread evenly over items: user u has items u, u+1, …, u+per_user-1 (mod n_items)."""
    moment = time.time() - 3600 if times is None else times
    interactions = Interactions()
    for user in range(n_users):
        items = [f"i{(user + offset) % n_items}" for offset in range(per_user)]
        with_user(interactions, f"u{user}", items, moment)
    return interactions


def with_user(interactions: Interactions, user: str, items: list[str], moment: float) -> None:
    interactions.add_users([(user, dict.fromkeys(items, "1"), dict.fromkeys(items, moment))])


def failures(report) -> list[str]:
    return sorted(check.name for check in report.failures)


#: The manifest's field for them (``SnapshotManifest.pipeline_counters``).
COUNTERS = "pipeline_counters"


def lifetime(stats: dict[str, int]) -> Window:
    """The window with no earlier snapshot to subtract: the counters' whole life."""
    return choose_window(TrafficCounts(**stats), [])


def test_healthy_data_passes_every_check():
    stats = {"accepted": 1000, "duplicates": 10, "rejected": 5}
    report = check_quality(build(), lifetime(stats), Settings())
    assert report.passed, report.failures
    assert sorted(check.name for check in report.checks) == [
        "duplicate_share",
        "insane_timestamp_share",
        "min_interactions",
        "min_items",
        "min_users",
        "reject_share",
        "top_item_share",
        "top_user_share",
    ]


def test_no_data_fails_the_minimums_without_crashing():
    report = check_quality(Interactions(), lifetime({}), Settings())
    assert not report.passed
    assert failures(report) == ["min_interactions", "min_items", "min_users"]


def _too_few_users() -> tuple[Interactions, Settings]:
    # 9 users × 12 items = 108 interactions; shares relaxed so only the user count fails.
    return build(n_users=9, per_user=12), Settings(max_user_share=0.2)


def _too_few_items() -> tuple[Interactions, Settings]:
    return build(n_users=25, n_items=9, per_user=5), Settings()


def _too_few_interactions() -> tuple[Interactions, Settings]:
    return build(n_users=25, per_user=3), Settings(max_user_share=0.2)


def _one_user_dominates() -> tuple[Interactions, Settings]:
    data = build()
    with_user(data, "whale", [f"i{n}" for n in range(20)], time.time() - 60)
    return data, Settings()  # 20 of 270 interactions: 7.4 % > 5 %


def _one_item_dominates() -> tuple[Interactions, Settings]:
    data = Interactions()
    for user in range(25):
        items = [f"i{(3 * user + k) % 20}" for k in range(3)] + ["hit"]
        with_user(data, f"u{user}", items, time.time() - 60)
    return data, Settings()  # "hit" is 25 of 100 interactions: 25 % > 20 %


def _timestamp_from_1970() -> tuple[Interactions, Settings]:
    data = build()
    with_user(data, "broken-clock", ["i0"], 0.0)
    return data, Settings()


def _timestamp_from_the_future() -> tuple[Interactions, Settings]:
    data = build()
    with_user(data, "future-clock", ["i0"], time.time() + 86_400)
    return data, Settings()


@pytest.mark.parametrize(
    ("make", "failed"),
    [
        (_too_few_users, "min_users"),
        (_too_few_items, "min_items"),
        (_too_few_interactions, "min_interactions"),
        (_one_user_dominates, "top_user_share"),
        (_one_item_dominates, "top_item_share"),
        (_timestamp_from_1970, "insane_timestamp_share"),
        (_timestamp_from_the_future, "insane_timestamp_share"),
    ],
)
def test_each_data_check_fails_on_data_that_breaks_it(make, failed):
    data, settings = make()
    report = check_quality(data, lifetime({"accepted": 100}), settings)
    assert not report.passed
    assert failures(report) == [failed]
    check = report.failures[0]
    assert check.detail
    assert check.value != check.threshold


@pytest.mark.parametrize(
    ("stats", "failed", "value"),
    [
        ({"accepted": 70, "rejected": 30}, "reject_share", 0.3),
        ({"accepted": 40, "duplicates": 60}, "duplicate_share", 0.6),
    ],
)
def test_each_pipeline_check_fails_on_counters_that_break_it(stats, failed, value):
    report = check_quality(build(), lifetime(stats), Settings())
    assert failures(report) == [failed]
    assert report.failures[0].value == pytest.approx(value)


def test_shares_exactly_at_the_limit_pass():
    stats = {"accepted": 80, "rejected": 20, "duplicates": 0}
    report = check_quality(build(), lifetime(stats), Settings(max_reject_share=0.2))
    assert report.passed, report.failures


# ── the window the shares judge ───────────────────────────────────────────────────────────

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def baseline(name: str, hours: int, **counters: int) -> Baseline:
    return Baseline(name, T0 + timedelta(hours=hours), TrafficCounts(**counters))


def check(checks: list[QualityCheck], name: str) -> QualityCheck:
    return next(found for found in checks if found.name == name)


def test_a_window_too_small_to_judge_is_widened_to_an_earlier_snapshot():
    # A snapshot refused for a burst of rejects, then one taken 10 clean events later: judged
    # over those 10 alone, the burst would pass unseen.
    now = TrafficCounts(accepted=1010, rejected=500)
    recent = baseline("2-0.g0", 2, accepted=1000, rejected=500)
    older = baseline("1-0.g0", 1, accepted=900, rejected=0)

    window = choose_window(now, [recent, older])

    assert window.counts == TrafficCounts(accepted=110, rejected=500)
    assert "since snapshot 1-0.g0" in window.description
    reject = check(share_checks(window, Settings()), "reject_share")
    assert not reject.passed
    assert "over 610 events since snapshot 1-0.g0" in reject.detail


def test_a_window_too_small_everywhere_is_reported_but_not_judged():
    now = TrafficCounts(accepted=10, duplicates=40, rejected=40)
    window = choose_window(now, [baseline("1-0.g0", 1)])

    assert window.counts.total < MIN_WINDOW_EVENTS
    for found in share_checks(window, Settings()):
        assert found.passed
        assert found.value > found.threshold
        assert "not judged" in found.detail
        assert "since snapshot 1-0.g0" in found.detail


def test_counters_that_went_backwards_fall_back_to_their_lifetime():
    # A Redis flushed after the snapshot: its record (and any older one) counts other traffic.
    now = TrafficCounts(accepted=300, rejected=200)
    window = choose_window(now, [baseline("1-0.g0", 1, accepted=5000, rejected=10)])

    assert window.counts == now
    assert "lifetime" in window.description
    assert "backwards since snapshot 1-0.g0" in window.description
    assert not check(share_checks(window, Settings()), "reject_share").passed


def test_baselines_are_the_snapshots_that_recorded_counters_newest_first(store):
    def write(name: str, hours: int, counters: dict[str, int] | None) -> None:
        info = SnapshotInfo(
            snapshot_id=name, url="", created_at=T0 + timedelta(hours=hours), users=0,
            items=0, interactions=0, time_min=None, time_max=None,
            quality={"passed": True, "checks": []},
        )  # fmt: skip
        extra = {} if counters is None else {COUNTERS: counters}
        store.write_bundle(f"snapshots/{name}", {}, {**info.model_dump(mode="json"), **extra})

    # An erasure's new generation shares its position, and "g10" sorts before "g9" by name:
    # the time each was taken orders them.
    write("5-7.g9", 1, {"accepted": 1})
    write("5-7.g10", 2, {"accepted": 2})
    write("4-1.g0", 0, None)  # written before counters were recorded
    store.write_bytes("snapshots/6-1.g0/manifest.json", b"{broken")
    write("7-1.g0", 3, {"accepted": 3})  # the one being taken

    baselines = read_baselines(store, exclude="7-1.g0")

    assert [(found.snapshot_id, found.counters.accepted) for found in baselines] == [
        ("5-7.g10", 2),
        ("5-7.g9", 1),
    ]


# ── take_snapshot ─────────────────────────────────────────────────────────────────────────


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'artifacts'}")


@pytest.fixture
async def applied_events(stream, consumer, make_event, read_once) -> None:
    for user in ("u1", "u2", "u3"):
        for item in ("a", "b"):
            await stream.add(make_event(user, item, EventType.LIKE))
    assert await read_once(consumer) == 6


def manifest_path(tmp_path: Path, snapshot_id: str) -> Path:
    return tmp_path / "artifacts" / "snapshots" / snapshot_id / MANIFEST


@pytest.mark.usefixtures("applied_events")
async def test_take_snapshot_writes_a_verified_bundle(
    redis_client, sync_redis, store, settings, tmp_path
):
    info = await take_snapshot(redis_client, store, settings)

    manifest = json.loads(manifest_path(tmp_path, info.snapshot_id).read_text())
    assert SnapshotInfo.model_validate(manifest) == info
    assert (info.users, info.items, info.interactions) == (3, 2, 6)
    assert info.time_min is not None
    assert info.time_max is not None
    assert info.time_min <= info.time_max
    assert info.url == store.url(f"snapshots/{info.snapshot_id}")
    assert info.snapshot_id.endswith(".g0")
    # Three users are too few for the default gate; the snapshot says so, it is still written.
    assert not info.quality.passed
    assert "min_users" in {check.name for check in info.quality.failures}

    _, files = store.read_bundle(f"snapshots/{info.snapshot_id}")  # checksums verified
    arrays = load_npz(files[SNAPSHOT_FILE])
    assert list(arrays["user_ids"]) == ["u1", "u2", "u3"]
    assert len(arrays["rows"]) == 6
    assert np.all(arrays["weights"] == 4.0)
    assert SnapshotInfo.model_validate_json(sync_redis.get(keys.SNAPSHOT_LATEST)) == info


@pytest.mark.usefixtures("applied_events")
async def test_take_snapshot_is_idempotent_while_nothing_changes(
    redis_client, store, settings, stream, make_event, tmp_path
):
    first = await take_snapshot(redis_client, store, settings)
    path = manifest_path(tmp_path, first.snapshot_id)
    data_file = path.with_name(SNAPSHOT_FILE)
    stamps = (path.stat().st_mtime_ns, data_file.stat().st_mtime_ns)
    await asyncio.sleep(0.05)  # so that a rewrite would show in the mtimes

    again = await take_snapshot(redis_client, store, settings)
    assert again == first
    assert (path.stat().st_mtime_ns, data_file.stat().st_mtime_ns) == stamps

    # An event in the stream that is not applied yet is not in the data either: same snapshot.
    await stream.add(make_event("u9", "z"))
    assert (await take_snapshot(redis_client, store, settings)).snapshot_id == first.snapshot_id
    assert path.stat().st_mtime_ns == stamps[0]
    assert len(list(path.parent.parent.iterdir())) == 1


@pytest.mark.usefixtures("applied_events")
async def test_an_applied_event_makes_a_new_snapshot(
    redis_client, sync_redis, store, settings, stream, consumer, make_event, read_once
):
    first = await take_snapshot(redis_client, store, settings)

    await stream.add(make_event("u4", "c", EventType.PURCHASE))
    assert await read_once(consumer) == 1
    second = await take_snapshot(redis_client, store, settings)

    assert second.snapshot_id != first.snapshot_id
    assert (second.users, second.items, second.interactions) == (4, 3, 7)
    assert store.exists(f"snapshots/{first.snapshot_id}/{MANIFEST}")
    latest = SnapshotInfo.model_validate_json(sync_redis.get(keys.SNAPSHOT_LATEST))
    assert latest.snapshot_id == second.snapshot_id


@pytest.mark.usefixtures("applied_events")
async def test_a_user_erasure_makes_a_new_snapshot_without_the_user(redis_client, store, settings):
    first = await take_snapshot(redis_client, store, settings)

    await Eraser(redis_client, PARTITIONS, ephemeral=redis_client).erase("u2")
    second = await take_snapshot(redis_client, store, settings)

    assert second.snapshot_id != first.snapshot_id
    assert second.snapshot_id.endswith(".g1")
    assert (second.users, second.interactions) == (2, 4)
    _, files = store.read_bundle(f"snapshots/{second.snapshot_id}")
    assert list(load_npz(files[SNAPSHOT_FILE])["user_ids"]) == ["u1", "u3"]


@pytest.mark.usefixtures("applied_events")
async def test_a_deleted_item_makes_a_new_snapshot_without_the_item(redis_client, store, settings):
    catalogue = Catalogue(redis_client)
    await catalogue.upsert([ItemWithId(item_id=item, title=item) for item in ("a", "b")])
    first = await take_snapshot(redis_client, store, settings)

    assert await catalogue.delete("b")
    second = await take_snapshot(redis_client, store, settings)

    # The users' histories still hold "b" (until the retention forgets it): the snapshot not.
    assert second.snapshot_id != first.snapshot_id
    assert (second.users, second.items, second.interactions) == (3, 1, 3)
    _, files = store.read_bundle(f"snapshots/{second.snapshot_id}")
    assert list(load_npz(files[SNAPSHOT_FILE])["item_ids"]) == ["a"]


async def test_snapshot_passes_the_gate_on_healthy_data(
    redis_client, sync_redis, store, stream, consumer, make_event, redis_url, read_once
):
    for user in range(25):
        for offset in range(5):
            await stream.add(make_event(f"u{user}", f"i{(user + offset) % 20}", EventType.CLICK))
    assert await read_once(consumer) == 125
    sync_redis.hset(P0.stats, mapping={"accepted": 125, "duplicates": 0})

    info = await take_snapshot(redis_client, store, Settings(redis_url=redis_url))

    assert info.quality.passed, info.quality.failures
    assert (info.users, info.items, info.interactions) == (25, 20, 125)


# ── the shares over the traffic since the previous snapshot ────────────────────────────────


@pytest.fixture
async def healthy_events(stream, consumer, make_event, read_once) -> None:
    """25 users × 5 items: data every data check passes."""
    for user in range(25):
        for offset in range(5):
            await stream.add(make_event(f"u{user}", f"i{(user + offset) % 20}", EventType.CLICK))
    assert await read_once(consumer) == 125


@pytest.fixture
def set_counters(sync_redis):
    """``set_counters(accepted=…, duplicates=…, rejected=…)``: the pipeline's lifetime totals,
    as the gateway would have counted them."""

    def set_(accepted: int, duplicates: int = 0, rejected: int = 0) -> None:
        sync_redis.hset(P0.stats, mapping={"accepted": accepted, "duplicates": duplicates})
        sync_redis.set(keys.PIPELINE_REJECTED, rejected)

    return set_


@pytest.fixture
def one_more_event(stream, consumer, make_event, read_once):
    """Apply one more event, so that the next snapshot is a new one."""
    counter = iter(range(100, 1000))

    async def apply() -> None:
        await stream.add(make_event(f"u{next(counter)}", "i0", EventType.CLICK))
        assert await read_once(consumer) == 1

    return apply


BURSTS = pytest.mark.parametrize(
    ("bad", "share"), [("rejected", "reject_share"), ("duplicates", "duplicate_share")]
)


@BURSTS
@pytest.mark.usefixtures("healthy_events")
async def test_a_burst_refuses_one_snapshot_and_a_clean_window_after_it_passes(
    redis_client, store, redis_url, set_counters, one_more_event, bad, share
):
    settings = Settings(redis_url=redis_url)
    set_counters(**{"accepted": 125, bad: 5000})
    refused = await take_snapshot(redis_client, store, settings)
    assert failures(refused.quality) == [share]

    # 1000 clean events later: over its whole life the pipeline is still 80 % bad, and that
    # used to refuse every snapshot until good events diluted it. No one has to step in.
    await one_more_event()
    set_counters(**{"accepted": 1125, bad: 5000})
    recovered = await take_snapshot(redis_client, store, settings)

    assert recovered.quality.passed, recovered.quality.failures
    judged = check(recovered.quality.checks, share)
    assert judged.value == 0.0
    assert f"over 1000 events since snapshot {refused.snapshot_id}" in judged.detail


@BURSTS
@pytest.mark.usefixtures("healthy_events")
async def test_a_burst_after_a_long_clean_history_refuses_the_snapshot(
    redis_client, store, redis_url, set_counters, one_more_event, bad, share
):
    settings = Settings(redis_url=redis_url)
    set_counters(accepted=1_000_000)
    clean = await take_snapshot(redis_client, store, settings)
    assert clean.quality.passed, clean.quality.failures

    # 3000 bad events of 4000: 0.3 % of the pipeline's life, 75 % of what came in since.
    await one_more_event()
    set_counters(**{"accepted": 1_001_000, bad: 3000})
    burst = await take_snapshot(redis_client, store, settings)

    assert failures(burst.quality) == [share]
    judged = check(burst.quality.checks, share)
    assert judged.value == pytest.approx(0.75)
    assert f"over 4000 events since snapshot {clean.snapshot_id}" in judged.detail


@pytest.mark.usefixtures("healthy_events")
async def test_after_a_snapshot_without_recorded_counters_the_shares_are_lifetime_ones(
    redis_client, store, redis_url, set_counters, one_more_event, tmp_path
):
    settings = Settings(redis_url=redis_url)
    set_counters(accepted=125)
    old = await take_snapshot(redis_client, store, settings)
    path = manifest_path(tmp_path, old.snapshot_id)
    manifest = json.loads(path.read_text())
    assert manifest.pop(COUNTERS) == {"accepted": 125, "duplicates": 0, "rejected": 0}
    path.write_text(json.dumps(manifest))  # as a version before this one wrote it

    await one_more_event()
    set_counters(accepted=1125, rejected=1000)
    info = await take_snapshot(redis_client, store, settings)

    judged = check(info.quality.checks, "reject_share")
    assert judged.value == pytest.approx(1000 / 2125)  # not 1000 / 2000, the window since
    assert "over 2125 events over the counters' lifetime" in judged.detail
    recorded = json.loads(manifest_path(tmp_path, info.snapshot_id).read_text())
    assert recorded[COUNTERS] == {"accepted": 1125, "duplicates": 0, "rejected": 1000}


# ── paging through users while events are applied ─────────────────────────────────────────


class PagesInterleaved:
    """The service's client, running ``between`` once, after the first read of the users set
    returns: what the consumer and erasure do while a snapshot pages through the users."""

    def __init__(self, client, between) -> None:
        self.client = client
        self.between = between
        self.pages = 0

    async def execute(self, *args):
        reply = await self.client.execute(*args)
        if len(args) > 1 and args[1] == P0.users:
            self.pages += 1
            if self.pages == 1:
                await self.between()
        return reply

    async def execute_many(self, commands):
        return await self.client.execute_many(commands)


async def test_every_user_is_read_once_while_users_move_and_go_between_pages(
    redis_client, sync_redis, stream, applier, make_event
):
    users = [f"u{n:04d}" for n in range(1200)]  # pages of 500, and past a listpack's size
    for start in range(0, len(users), 600):
        batch = [make_event(user, "i1") for user in users[start : start + 600]]
        await applier.apply(P0, await stream.deliver(batch), now=1.0)
    by_age = sync_redis.zrange(P0.users, 0, -1)
    moved, erased = by_age[0], by_age[700]

    async def between() -> None:
        # The user heard from longest ago sends an event (and moves to the end); another goes.
        await applier.apply(P0, await stream.deliver([make_event(moved, "i2")]), now=2.0)
        await Eraser(redis_client, PARTITIONS, ephemeral=redis_client).erase(erased)

    client = PagesInterleaved(redis_client, between)
    interactions = await read_interactions(client, PARTITIONS)

    assert client.pages > 1
    assert sync_redis.zrange(P0.users, -1, -1) == [moved]
    read = [str(user) for user in interactions.user_ids]
    assert len(read) == len(set(read))  # nobody twice
    remaining = set(users) - {erased}
    assert remaining <= set(read)  # nobody skipped
    assert set(read) - remaining <= {erased}  # read before it went, or not at all
