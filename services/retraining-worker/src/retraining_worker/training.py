"""Snapshot → choose a recipe → judge it on the recent holdout → gate → publish. Plain functions.

The Celery task only unpacks its message and calls :func:`run_training`. CPU steps run in a
thread so the training lock (``retraining_worker.lock``) keeps being renewed while the model
fits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from scipy.sparse import csr_matrix

from recsys_shared import code_version
from recsys_shared.artifacts import (
    CATALOGUE_FILE,
    CONTENT_FILE,
    IDS_FILE,
    MODEL_FILE,
    SNAPSHOT_FILE,
    ArtifactStore,
    load_npz,
    model_folder,
    npz_bytes,
    sparse_arrays,
)
from recsys_shared.errors import UpstreamUnavailable
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import PASSED_THE_GATE, ModelRegistry
from recsys_shared.schemas import (
    Algorithm,
    ModelInfo,
    ModelStatus,
    Recipe,
    SnapshotInfo,
    TrainingData,
    TrainingOutcome,
    TrainingStatus,
)
from retraining_worker import metrics
from retraining_worker.config import Settings
from retraining_worker.data import Interactions
from retraining_worker.judging import Bench, gate
from retraining_worker.lock import HeldLock, training_lock
from retraining_worker.pruning import prune
from retraining_worker.recipes import FittedRecipe, describe, fit
from retraining_worker.recipes.content import Catalogue, content_features, content_neighbours
from retraining_worker.selection import Plan, choose, recipe_of

log = logging.getLogger(__name__)

#: Content neighbours computed per item: the most any recipe (the hybrid's search) asks for.
_CONTENT_NEIGHBOURS = 100


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
    task_id: str | None = None,
) -> TrainingOutcome:
    """Train on the current data and publish the model if it passes the gate.

    ``task_id`` is the Celery task asking (``tasks.train_model`` passes its own): a forced or
    search training it already did on this snapshot is not done again.
    """
    client = await connect(
        settings.redis_dsn, command_timeout=settings.redis_timeout_seconds, name="training"
    )
    try:
        async with training_lock(client, settings.lock_ttl_seconds) as held:
            return await _train_locked(
                client, held, settings, Plan(search, algorithm), force, shuffle_items, task_id
            )
    finally:
        await client.aclose()


async def _train_locked(
    client: RedisClient,
    held: HeldLock,
    settings: Settings,
    plan: Plan,
    force: bool,
    shuffle_items: bool,
    task_id: str | None,
) -> TrainingOutcome:
    registry = ModelRegistry(client)
    snapshot = await request_snapshot(settings)
    refused = await _no_new_work(
        snapshot, registry, force=force or plan.search is True, task_id=task_id
    )
    if refused is not None:
        metrics.TRAINING_RUNS.labels(refused.status).inc()
        return refused
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
    held.check()
    info.task_id = task_id
    await _register(registry, store, settings, held, outcome, info, served, loaded)
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


async def _no_new_work(
    snapshot: SnapshotInfo,
    registry: ModelRegistry,
    *,
    force: bool,
    task_id: str | None,
) -> TrainingOutcome | None:
    """Why this snapshot is not trained on, if it is not: refused by the quality gate, or a
    version was already trained on it. Forced (an explicit search too) it is new work even on
    the same data, once per task: ``task_id`` gets the version it already trained here."""
    if not snapshot.quality.passed:
        reasons = [check.detail for check in snapshot.quality.failures]
        log.warning("snapshot %s refused by the quality gate: %s", snapshot.snapshot_id, reasons)
        return TrainingOutcome(
            status=TrainingStatus.REFUSED, snapshot_id=snapshot.snapshot_id, reasons=reasons
        )
    existing = await registry.version_for_snapshot(snapshot.snapshot_id)
    done = "was already trained on this snapshot"
    if existing is not None and force:
        # Messages are acknowledged late: a worker dying after it published but before the
        # ack gets the message delivered again, with its task id, which must not publish twice.
        existing = await _trained_by_task(registry, snapshot.snapshot_id, task_id)
        done += " by this task (delivered again)"
    if existing is None:
        return None
    return TrainingOutcome(
        status=TrainingStatus.UNCHANGED,
        snapshot_id=snapshot.snapshot_id,
        version=existing,
        reasons=[f"version {existing} {done}"],
    )


async def _trained_by_task(
    registry: ModelRegistry, snapshot_id: str, task_id: str | None
) -> int | None:
    """The version task ``task_id`` already trained on the snapshot, if an earlier delivery
    of it got as far as the registry."""
    if task_id is None:
        return None
    for info in await registry.list():
        if info.snapshot_id == snapshot_id and info.task_id == task_id:
            return info.version
    return None


async def _register(
    registry: ModelRegistry,
    store: ArtifactStore,
    settings: Settings,
    held: HeldLock,
    outcome: TrainingOutcome,
    info: ModelInfo,
    served: FittedRecipe | None,
    snapshot: Snapshot,
) -> None:
    """Write the served model's artifact, then publish the version if it passed the gate or
    record it if not (rejected: with an artifact an experiment may try)."""
    if served is not None:
        manifest = await asyncio.to_thread(_write_artifact, store, info, served, snapshot)
        info.artifact_url = store.url(model_folder(info.version))
        info.checksum = manifest["files"][MODEL_FILE]["sha256"]
        held.check()
    published = served is not None and outcome.status is TrainingStatus.PUBLISHED
    with held.fenced() as fence:
        if published:
            await registry.publish(info, reason=PASSED_THE_GATE, fence=fence)
        else:
            await registry.record(info, fence=fence)
    if published:
        await prune(registry, store, settings)


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
        data=_training_data(snapshot_data, snapshot, bench),
        evaluation_k=settings.evaluation_k,
        metrics=scores,
        baseline_metrics=baseline,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_scores,
        code_version=code_version(),
    )
    # The served model: the same recipe on all the data, the holdout window included; for a
    # rejected recipe too when KEEP_REJECTED_ARTIFACTS (an experiment may try it online).
    keep = not reasons or settings.keep_rejected_artifacts
    served = fit(recipe, bench.training_set(recipe)) if keep else None
    outcome = TrainingOutcome(
        status=TrainingStatus.REJECTED if reasons else TrainingStatus.PUBLISHED,
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


def _training_data(snapshot_data: Snapshot, snapshot: SnapshotInfo, bench: Bench) -> TrainingData:
    """What a version was trained on, recorded with it (lineage)."""
    data = snapshot_data.data
    return TrainingData(
        users=data.shape[0],
        items=data.shape[1],
        interactions=len(data),
        time_min=snapshot.time_min,
        time_max=snapshot.time_max,
        holdout_cut_time=bench.split.cut_time,
        snapshot_created_at=snapshot.created_at.timestamp(),
        item_metadata=snapshot_data.features is not None,
    )


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
