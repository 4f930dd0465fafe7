"""Snapshot → train → evaluate on the recent holdout → gate → publish. Plain functions.

The Celery task only unpacks its message and calls :func:`run_training`. CPU steps run in a
thread so the training lock keeps being renewed while the model fits.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeAlias

import httpx
import numpy as np
import redis.asyncio as aioredis
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking

from recsys_shared import code_version, keys
from recsys_shared.artifacts import (
    IDS_FILE,
    MODEL_FILE,
    SNAPSHOT_FILE,
    SNAPSHOTS_FOLDER,
    ArtifactStore,
    load_npz,
    model_folder,
    npz_bytes,
    snapshot_folder,
)
from recsys_shared.errors import RecsysError, UpstreamUnavailable
from recsys_shared.foldin import least_squares_fold_in
from recsys_shared.redis import create_async_redis
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import Algorithm, ModelInfo, ModelStatus, SnapshotInfo, TrainingOutcome
from recsys_shared.streams import parse_stream_id
from retraining_worker import metrics
from retraining_worker.config import Settings
from retraining_worker.data import HoldoutSplit, Interactions, seen_matrix, temporal_split
from retraining_worker.evaluation import item_popularity, lift, rank_in_batches, ranking_metrics

log = logging.getLogger(__name__)

Model: TypeAlias = AlternatingLeastSquares | BayesianPersonalizedRanking

_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class TrainingLocked(RecsysError):
    """Another training holds the lock; the task should try again later."""


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
) -> TrainingOutcome:
    """Train on the current data and publish the model if it passes the gate."""
    client = create_async_redis(settings.redis_dsn, timeout=settings.redis_timeout_seconds)
    try:
        async with training_lock(client, settings.lock_ttl_seconds):
            return await _train_locked(client, settings, algorithm, force, shuffle_items)
    finally:
        await client.aclose()


async def _train_locked(
    client: aioredis.Redis,
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
    if served is not None:
        manifest = await asyncio.to_thread(_write_artifact, store, info, served, data)
        info.artifact_url = store.url(model_folder(version))
        info.checksum = manifest["files"][MODEL_FILE]["sha256"]
        await registry.publish(info, reason="passed the gate")
        await collect_garbage(registry, store, settings)
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
