"""Snapshot → choose a recipe → judge it on the recent holdout → gate → publish. Plain functions.

The Celery task only unpacks its message and calls :func:`run_training`. CPU steps run in a
thread so the training lock keeps being renewed while the model fits.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import redis.asyncio as aioredis
from scipy.sparse import csr_matrix

from recsys_shared import code_version, keys
from recsys_shared.artifacts import (
    CATALOGUE_FILE,
    CONTENT_FILE,
    IDS_FILE,
    MODEL_FILE,
    SNAPSHOT_FILE,
    SNAPSHOTS_FOLDER,
    ArtifactStore,
    load_npz,
    model_folder,
    npz_bytes,
    snapshot_folder,
    sparse_arrays,
)
from recsys_shared.errors import RecsysError, UpstreamUnavailable
from recsys_shared.redis import create_async_redis
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import (
    Algorithm,
    ModelInfo,
    ModelStatus,
    Recipe,
    SnapshotInfo,
    TrainingOutcome,
)
from recsys_shared.streams import parse_stream_id
from retraining_worker import metrics
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.judging import Bench, gate
from retraining_worker.recipes import FittedRecipe, describe, fit
from retraining_worker.recipes.content import Catalogue, content_features, content_neighbours
from retraining_worker.selection import Plan, choose, recipe_of

log = logging.getLogger(__name__)

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
#: Content neighbours computed per item: the most any recipe (the hybrid's search) asks for.
_CONTENT_NEIGHBOURS = 100


class TrainingLocked(RecsysError):
    """Another training holds the lock; the task should try again later."""


@dataclass(frozen=True)
class Champion:
    """The active model's recipe."""

    version: int
    recipe: Recipe


@dataclass(frozen=True)
class Snapshot:
    """A snapshot's interactions, on every item it knows (catalogued ones too), and the
    content model over those items when the snapshot carries item metadata."""

    data: Interactions
    features: csr_matrix | None
    content: csr_matrix | None

    @classmethod
    def from_files(cls, files: dict[str, bytes], shuffle_seed: int | None = None) -> Snapshot:
        data = Interactions.from_arrays(load_npz(files[SNAPSHOT_FILE]))
        if shuffle_seed is not None:
            data = data.shuffled(shuffle_seed)
        if CATALOGUE_FILE not in files:
            return cls(data, None, None)
        catalogue = Catalogue.from_arrays(load_npz(files[CATALOGUE_FILE]))
        data = data.with_items(catalogue.item_ids)
        features = content_features(data.item_ids, catalogue)
        return cls(data, features, content_neighbours(features, _CONTENT_NEIGHBOURS))


def evaluate_champion(
    champion: Champion, challenger: Recipe, bench: Bench
) -> dict[str, float] | None:
    """The champion's recipe fitted on the same training window and judged on the same holdout.

    Its served model is not judged: it was fitted on data that includes the holdout window
    and would win on having seen the answers. ``None`` when the recipes are the same (the
    challenger's own scores stand for both).
    """
    if champion.recipe == challenger:
        return None
    return bench.judge(champion.recipe)


@asynccontextmanager
async def training_lock(client: aioredis.Redis, ttl_seconds: int) -> AsyncIterator[None]:
    """Only one training at a time, across every worker; renewed while held."""
    token = uuid.uuid4().hex
    if not await client.set(keys.TRAINING_LOCK, token, nx=True, ex=ttl_seconds):
        raise TrainingLocked("Another training is running.")
    renew = client.register_script(_RENEW_LOCK)

    async def keep_renewing() -> None:
        while True:
            await asyncio.sleep(ttl_seconds / 3)
            await renew(keys=[keys.TRAINING_LOCK], args=[token, ttl_seconds * 1000])

    renewer = asyncio.create_task(keep_renewing())
    try:
        yield
    finally:
        renewer.cancel()
        await client.register_script(_RELEASE_LOCK)(keys=[keys.TRAINING_LOCK], args=[token])


async def request_snapshot(settings: Settings) -> SnapshotInfo:
    try:
        async with httpx.AsyncClient(timeout=settings.feature_store_timeout_seconds) as http:
            response = await http.post(f"{settings.feature_store_url}/snapshots")
            response.raise_for_status()
    except httpx.HTTPError as error:
        raise UpstreamUnavailable(
            f"The feature-store could not export a snapshot: {error}"
        ) from error
    return SnapshotInfo.model_validate_json(response.content)


async def run_training(
    settings: Settings,
    *,
    algorithm: Algorithm | None = None,
    force: bool = False,
    shuffle_items: bool = False,
    search: bool | None = None,
) -> TrainingOutcome:
    """Train on the current data and publish the model if it passes the gate."""
    client = create_async_redis(settings.redis_dsn, timeout=settings.redis_timeout_seconds)
    try:
        async with training_lock(client, settings.lock_ttl_seconds):
            return await _train_locked(
                client, settings, Plan(search, algorithm), force, shuffle_items
            )
    finally:
        await client.aclose()


async def _train_locked(
    client: aioredis.Redis,
    settings: Settings,
    plan: Plan,
    force: bool,
    shuffle_items: bool,
) -> TrainingOutcome:
    registry = ModelRegistry(client)
    snapshot = await request_snapshot(settings)
    if not snapshot.quality.passed:
        reasons = [check.detail for check in snapshot.quality.failures]
        metrics.TRAINING_RUNS.labels("refused").inc()
        log.warning("snapshot %s refused by the quality gate: %s", snapshot.snapshot_id, reasons)
        return TrainingOutcome(status="refused", snapshot_id=snapshot.snapshot_id, reasons=reasons)
    existing = await registry.version_for_snapshot(snapshot.snapshot_id)
    # An explicit search is new work even on the same data.
    if existing is not None and not force and not plan.search:
        metrics.TRAINING_RUNS.labels("unchanged").inc()
        return TrainingOutcome(
            status="unchanged",
            snapshot_id=snapshot.snapshot_id,
            version=existing,
            reasons=[f"version {existing} was already trained on this snapshot"],
        )
    store = ArtifactStore(settings.artifact_url)
    folder = snapshot.url.removeprefix(store.base_url + "/")
    _, files = await asyncio.to_thread(store.read_bundle, folder)
    shuffle_seed = settings.random_seed if shuffle_items else None
    loaded = await asyncio.to_thread(Snapshot.from_files, files, shuffle_seed)
    active = await registry.active()
    champion = Champion(active.version, recipe_of(active, settings)) if active else None
    # The last winner is the active version's recipe, whether a search or a refit made it.
    last_winner = active.recipe if active is not None else None
    version = await registry.next_version()
    started = time.perf_counter()
    outcome, info, served = await asyncio.to_thread(
        _train_and_evaluate, loaded, plan, last_winner, settings, snapshot, version, champion
    )
    info.training_seconds = time.perf_counter() - started
    if served is not None:
        manifest = await asyncio.to_thread(_write_artifact, store, info, served, loaded)
        info.artifact_url = store.url(model_folder(version))
        info.checksum = manifest["files"][MODEL_FILE]["sha256"]
        await registry.publish(info, reason="passed the gate")
        await collect_garbage(registry, store, settings)
    else:
        await registry.record(info)
    metrics.TRAINING_RUNS.labels(outcome.status).inc()
    metrics.TRAINING_SECONDS.observe(info.training_seconds)
    log.info(
        "version %d %s (%s): %s (baseline %s)",
        version,
        outcome.status,
        outcome.selection,
        outcome.metrics,
        outcome.baseline_metrics,
    )
    return outcome


def _train_and_evaluate(
    snapshot_data: Snapshot,
    plan: Plan,
    last_winner: Recipe | None,
    settings: Settings,
    snapshot: SnapshotInfo,
    version: int,
    champion: Champion | None = None,
) -> tuple[TrainingOutcome, ModelInfo, FittedRecipe | None]:
    """Choose the recipe (search or refit), judge it on the holdout against popularity and
    the active model's recipe; if it passes, fit the served model on all the data."""
    data = snapshot_data.data
    bench = Bench.build(
        data,
        settings.holdout_fraction,
        settings,
        content=snapshot_data.content,
        features=snapshot_data.features,
    )
    recipe, selection = choose(plan, last_winner, bench, settings)
    scores = bench.judge(recipe)
    baseline = bench.popularity()
    champion_scores: dict[str, float] = {}
    if champion is not None:
        champion_scores = evaluate_champion(champion, recipe, bench) or scores
    reasons = gate(scores, baseline, settings, champion_scores)
    info = ModelInfo(
        version=version,
        status=ModelStatus.REJECTED if reasons else ModelStatus.CANDIDATE,
        status_reason="; ".join(reasons) or None,
        algorithm=recipe.algorithm,
        params=recipe.model_dump(exclude={"algorithm"}),
        recipe=recipe,
        selection=selection,
        created_at=datetime.now(UTC),
        snapshot_id=snapshot.snapshot_id,
        data={
            "users": data.shape[0],
            "items": data.shape[1],
            "interactions": len(data),
            "time_min": snapshot.time_min,
            "time_max": snapshot.time_max,
            "holdout_cut_time": bench.split.cut_time,
            "snapshot_created_at": snapshot.created_at.timestamp(),
            "item_metadata": snapshot_data.features is not None,
        },
        metrics=scores,
        baseline_metrics=baseline,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_scores,
        code_version=code_version(),
    )
    # The served model: the same recipe on all the data, the holdout window included.
    served = None if reasons else fit(recipe, bench.training_set(recipe))
    outcome = TrainingOutcome(
        status="rejected" if reasons else "published",
        snapshot_id=snapshot.snapshot_id,
        version=version,
        reasons=reasons,
        recipe=recipe,
        selection=selection.mode,
        search_seconds=selection.seconds if selection.mode == "search" else None,
        metrics=scores,
        baseline_metrics=baseline,
        champion_metrics=champion_scores,
    )
    log.info("version %d: %s (%s)", version, describe(recipe), selection.reason)
    return outcome, info, served


def _write_artifact(
    store: ArtifactStore, info: ModelInfo, model: FittedRecipe, snapshot: Snapshot
) -> dict[str, Any]:
    data = snapshot.data
    counts = np.bincount(data.cols, minlength=data.shape[1]).astype(np.int32)
    files = {
        **model.files(),
        IDS_FILE: npz_bytes(user_ids=data.user_ids, item_ids=data.item_ids, item_counts=counts),
    }
    if snapshot.content is not None:
        files[CONTENT_FILE] = npz_bytes(**sparse_arrays("content", snapshot.content))
    return store.write_bundle(
        model_folder(info.version),
        files,
        {"version": info.version, "algorithm": info.algorithm, "snapshot_id": info.snapshot_id},
    )


async def collect_garbage(
    registry: ModelRegistry, store: ArtifactStore, settings: Settings
) -> None:
    """Delete old model artifacts and snapshots. Never the active version's artifact nor the
    previous one's (the rollback target); versions stay listed with their lineage."""
    versions = [info for info in await registry.list() if info.artifact_url]
    active = await registry.active_version()
    previous = next(
        (
            info.version
            for info in versions
            if info.version != active and info.status is ModelStatus.RETIRED
        ),
        None,
    )
    kept = {info.version for info in versions[: settings.keep_model_versions]}
    for info in versions:
        if info.version in kept or info.version in (active, previous):
            continue
        await asyncio.to_thread(store.delete_tree, model_folder(info.version))
        await registry.drop_artifact(info.version)
        log.info("deleted the artifact of version %d", info.version)
    snapshots = sorted(
        store.list_dirs(SNAPSHOTS_FOLDER), key=lambda name: parse_stream_id(name.partition(".")[0])
    )
    for name in snapshots[: -settings.keep_snapshots]:
        await asyncio.to_thread(store.delete_tree, snapshot_folder(name))
