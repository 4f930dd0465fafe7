"""Snapshot → train → evaluate on the recent holdout → gate → publish. Plain functions.

The Celery task only unpacks its message and calls :func:`run_training`. CPU steps run in a
thread so the training lock keeps being renewed while the model fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeAlias

import httpx
import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking

from recsys_shared import code_version, keys
from recsys_shared.artifacts import (
    IDS_FILE,
    MODEL_FILE,
    SNAPSHOT_FILE,
    ArtifactStore,
    load_npz,
    model_folder,
    npz_bytes,
)
from recsys_shared.errors import RecsysError, StoreUnavailable, UpstreamUnavailable
from recsys_shared.foldin import least_squares_fold_in
from recsys_shared.locks import RedisLock
from recsys_shared.redis import RedisClient, connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Algorithm, ModelInfo, ModelStatus, SnapshotInfo, TrainingOutcome
from retraining_worker import metrics
from retraining_worker.config import Settings
from retraining_worker.data import HoldoutSplit, Interactions, seen_matrix, temporal_split
from retraining_worker.evaluation import item_popularity, lift, rank_in_batches, ranking_metrics
from retraining_worker.pruning import prune

log = logging.getLogger(__name__)

Model: TypeAlias = AlternatingLeastSquares | BayesianPersonalizedRanking


class TrainingLocked(RecsysError):
    """Another training holds the lock; the task should try again later."""


class TrainingLockLost(TrainingLocked):
    """The lock expired under this training (renewals failed): another training may run, so
    this one stops before publishing anything; the task tries again later."""


@dataclass(frozen=True)
class TrainingParams:
    algorithm: Algorithm
    factors: int
    regularization: float
    alpha: float
    iterations: int
    learning_rate: float
    random_seed: int
    threads: int

    @classmethod
    def from_settings(cls, settings: Settings, algorithm: Algorithm | None) -> TrainingParams:
        return cls(
            algorithm=algorithm or settings.algorithm,
            factors=settings.factors,
            regularization=settings.regularization,
            alpha=settings.alpha,
            iterations=settings.iterations,
            learning_rate=settings.learning_rate,
            random_seed=settings.random_seed,
            threads=settings.training_threads,
        )

    def public(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "threads"}


def fit(params: TrainingParams, data: Interactions, mask: np.ndarray | None = None) -> Model:
    matrix = data.matrix(mask)
    model: Model
    if params.algorithm == "als":
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.random_seed,
            num_threads=params.threads,
        )
    else:
        model = BayesianPersonalizedRanking(
            factors=params.factors,
            learning_rate=params.learning_rate,
            regularization=params.regularization,
            iterations=params.iterations,
            random_state=params.random_seed,
            num_threads=params.threads,
        )
    model.fit(matrix, show_progress=False)
    return model


def evaluate(model: Model, data: Interactions, split: HoldoutSplit, k: int) -> dict[str, float]:
    """Fold each evaluated user's revealed interactions in, rank, and score against targets."""
    if isinstance(model, AlternatingLeastSquares):
        vectors = model.recalculate_user(np.arange(len(split.users)), split.revealed)
    else:
        vectors = (
            np.stack(
                [
                    least_squares_fold_in(
                        model.item_factors, row.indices.astype(np.int64), row.data
                    )
                    for row in split.revealed
                ]
            )
            if len(split.users)
            else np.empty((0, model.item_factors.shape[1]), dtype=np.float32)
        )
    seen = seen_matrix(data, split.revealed_mask, split.users)
    item_factors = model.item_factors
    ranked = rank_in_batches(lambda rows: vectors[rows] @ item_factors.T, seen, k=k)
    return ranking_metrics(ranked, split.targets, k=k, n_items=data.shape[1])


def evaluate_popularity(data: Interactions, split: HoldoutSplit, k: int) -> dict[str, float]:
    popularity = item_popularity(data.matrix(split.train))
    seen = seen_matrix(data, split.revealed_mask, split.users)

    def scores(rows: slice) -> np.ndarray:
        count = len(range(*rows.indices(len(split.users))))
        return np.broadcast_to(popularity, (count, popularity.shape[0]))

    ranked = rank_in_batches(scores, seen, k=k)
    return ranking_metrics(ranked, split.targets, k=k, n_items=data.shape[1])


def gate(
    metrics_: dict[str, float],
    baseline: dict[str, float],
    settings: Settings,
    champion: dict[str, float] | None = None,
) -> list[str]:
    """Reasons to reject the challenger; empty when it may be published."""
    key = f"precision_at_{settings.evaluation_k}"
    if not metrics_ or not metrics_.get("evaluated_users"):
        return ["no users in the holdout window to evaluate on"]
    challenger, popular = metrics_.get(key, 0.0), baseline.get(key, 0.0)
    reasons = []
    if lift(challenger, popular) < settings.gate_min_lift:
        reasons.append(
            f"{key} {challenger:.4f} does not beat the popularity baseline {popular:.4f} "
            f"by the required {settings.gate_min_lift:.0%}"
        )
    if champion and champion.get("evaluated_users"):
        best = champion.get(key, 0.0)
        if challenger < best * (1.0 - settings.champion_tolerance):
            reasons.append(
                f"{key} {challenger:.4f} trails the active model's {best:.4f} on the same "
                f"holdout by more than the {settings.champion_tolerance:.0%} tolerance"
            )
    return reasons


@dataclass(frozen=True)
class Champion:
    """The active model's recipe: its algorithm and parameters."""

    version: int
    params: TrainingParams


def champion_of(info: ModelInfo, settings: Settings) -> Champion:
    base = TrainingParams.from_settings(settings, info.algorithm)
    known = {key: value for key, value in info.params.items() if key in base.public()}
    return Champion(info.version, replace(base, **known))


def evaluate_champion(
    champion: Champion, challenger: TrainingParams, data: Interactions, split: HoldoutSplit, k: int
) -> dict[str, float] | None:
    """The champion's recipe fitted on the same training window and judged on the same holdout.

    Its served model is not judged: it was fitted on data that includes the holdout window
    and would win on having seen the answers. ``None`` when the recipes are the same (the
    challenger's own scores stand for both).
    """
    if champion.params.public() == challenger.public():
        return None
    model = fit(replace(champion.params, threads=challenger.threads), data, split.train)
    return evaluate(model, data, split, k)


def model_bytes(model: Model) -> bytes:
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


@dataclass
class HeldLock:
    """The training lock while a training holds it; :meth:`check` before each step that
    writes, so a training whose lock was lost never publishes."""

    lock: RedisLock
    lost: bool = False

    def check(self) -> None:
        if self.lost:
            raise TrainingLockLost(
                "The training lock was lost (not renewed in time); stopping this training."
            )


@asynccontextmanager
async def training_lock(client: RedisClient, ttl_seconds: int) -> AsyncIterator[HeldLock]:
    """Only one training at a time, across every worker; renewed every third of its time to
    live while held. A renewal that finds the lock gone, or none succeeding for a whole time
    to live (Redis unreachable), marks it lost."""
    lock = RedisLock(client, keys.TRAINING_LOCK, ttl_seconds=ttl_seconds)
    if not await lock.acquire():
        raise TrainingLocked("Another training is running.")
    held = HeldLock(lock)

    async def keep_renewing() -> None:
        renewed_at = time.monotonic()
        while True:
            await asyncio.sleep(ttl_seconds / 3)
            try:
                if not await lock.renew():
                    break
                renewed_at = time.monotonic()
            except StoreUnavailable as error:
                log.warning("training lock not renewed: %s", error.detail)
                if time.monotonic() - renewed_at >= ttl_seconds:
                    break
        held.lost = True
        metrics.TRAINING_LOCK_LOST.inc()
        log.error("the training lock was lost; this training will not publish")

    renewer = asyncio.create_task(keep_renewing(), name="training-lock-renewer")
    try:
        yield held
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if not held.lost:
            with contextlib.suppress(RecsysError):
                await lock.release()


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
) -> TrainingOutcome:
    """Train on the current data and publish the model if it passes the gate."""
    client = await connect(
        settings.redis_dsn, command_timeout=settings.redis_timeout_seconds, name="training"
    )
    try:
        async with training_lock(client, settings.lock_ttl_seconds) as held:
            return await _train_locked(client, held, settings, algorithm, force, shuffle_items)
    finally:
        await client.aclose()


async def _train_locked(
    client: RedisClient,
    held: HeldLock,
    settings: Settings,
    algorithm: Algorithm | None,
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
    if existing is not None and not force:
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
    data = Interactions.from_arrays(load_npz(files[SNAPSHOT_FILE]))
    if shuffle_items:
        data = data.shuffled(settings.random_seed)
    params = TrainingParams.from_settings(settings, algorithm)
    active = await registry.active()
    champion = champion_of(active, settings) if active else None
    version = await registry.next_version()
    started = time.perf_counter()
    outcome, info, served = await asyncio.to_thread(
        _train_and_evaluate, data, params, settings, snapshot, version, champion
    )
    info.training_seconds = time.perf_counter() - started
    held.check()
    if served is not None:
        manifest = await asyncio.to_thread(_write_artifact, store, info, served, data)
        info.artifact_url = store.url(model_folder(version))
        info.checksum = manifest["files"][MODEL_FILE]["sha256"]
        held.check()
        await registry.publish(info, reason="passed the gate")
        await prune(registry, store, settings)
    else:
        await registry.record(info)
    metrics.TRAINING_RUNS.labels(outcome.status).inc()
    metrics.TRAINING_SECONDS.observe(info.training_seconds)
    log.info(
        "version %d %s: %s (baseline %s)",
        version,
        outcome.status,
        outcome.metrics,
        outcome.baseline_metrics,
    )
    return outcome


def _train_and_evaluate(
    data: Interactions,
    params: TrainingParams,
    settings: Settings,
    snapshot: SnapshotInfo,
    version: int,
    champion: Champion | None = None,
) -> tuple[TrainingOutcome, ModelInfo, Model | None]:
    """Judge the recipe on the holdout against popularity and the active model; if it passes,
    fit the served model on all the data."""
    k = settings.evaluation_k
    split = temporal_split(data, settings.holdout_fraction)
    challenger = fit(params, data, split.train)
    scores = evaluate(challenger, data, split, k)
    baseline = evaluate_popularity(data, split, k)
    champion_scores = {}
    if champion is not None:
        champion_scores = evaluate_champion(champion, params, data, split, k) or scores
    reasons = gate(scores, baseline, settings, champion_scores)
    status = "rejected" if reasons else "published"
    info = ModelInfo(
        version=version,
        status=ModelStatus.REJECTED if reasons else ModelStatus.CANDIDATE,
        status_reason="; ".join(reasons) or None,
        algorithm=params.algorithm,
        params=params.public(),
        created_at=datetime.now(UTC),
        snapshot_id=snapshot.snapshot_id,
        data={
            "users": data.shape[0],
            "items": data.shape[1],
            "interactions": len(data),
            "time_min": snapshot.time_min,
            "time_max": snapshot.time_max,
            "holdout_cut_time": split.cut_time,
            "snapshot_created_at": snapshot.created_at.timestamp(),
        },
        metrics=scores,
        baseline_metrics=baseline,
        champion_version=champion.version if champion else None,
        champion_metrics=champion_scores,
        code_version=code_version(),
    )
    # The served model: the same recipe on all the data, the holdout window included.
    served = None if reasons else fit(params, data)
    outcome = TrainingOutcome(
        status=status,
        snapshot_id=snapshot.snapshot_id,
        version=version,
        reasons=reasons,
        metrics=scores,
        baseline_metrics=baseline,
        champion_metrics=champion_scores,
    )
    return outcome, info, served


def _write_artifact(
    store: ArtifactStore, info: ModelInfo, model: Model, data: Interactions
) -> dict[str, Any]:
    files = {
        MODEL_FILE: model_bytes(model),
        IDS_FILE: npz_bytes(user_ids=data.user_ids, item_ids=data.item_ids),
    }
    return store.write_bundle(
        model_folder(info.version),
        files,
        {"version": info.version, "algorithm": info.algorithm, "snapshot_id": info.snapshot_id},
    )
