"""The recommender's model outside the serving path: scoring against bare numpy, and a
100,000-item x 1,000,000-user model in one recommender (its memory, load time and latency)."""

from __future__ import annotations

import asyncio
import io
import os
import random
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
from bench_wrk import say

from recommender.model_store import load_model
from recommender.scoring import top_k
from recsys_shared import keys
from recsys_shared.artifacts import IDS_FILE, MODEL_FILE, ArtifactStore, model_folder, npz_bytes
from recsys_shared.processes import ManagedProcess, RedisServer, free_port, uvicorn_argv, wait_until
from recsys_shared.redis import connect
from recsys_shared.registry import ModelRegistry
from recsys_shared.schemas import ModelInfo, ModelStatus
from recsys_shared.testing import Stack


def scoring(stack: Stack) -> dict[str, Any]:
    say("scoring vs bare numpy…")
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    version = int(client.get(keys.MODEL_ACTIVE) or 0)
    client.close()
    info = asyncio.run(_model_info(stack.redis.url, version))
    model = load_model(ArtifactStore(stack.env["ARTIFACT_URL"]), info)
    generator = np.random.default_rng(0)
    rows = generator.integers(0, model.user_factors.shape[0], 2000)
    seen = [generator.integers(0, model.item_factors.shape[0], 20) for _ in rows]

    def ours() -> None:
        for row, exclude in zip(rows, seen, strict=True):
            top_k(model.item_factors @ model.user_factors[row], k=10, exclude=exclude)

    def bare() -> None:
        for row in rows:
            scores = model.item_factors @ model.user_factors[row]
            best = np.argpartition(-scores, 9)[:10]
            best[np.argsort(-scores[best])]

    timings = {
        name: min(_timed(fn) for _ in range(5)) for name, fn in (("ours", ours), ("bare", bare))
    }
    return {
        "items": int(model.item_factors.shape[0]),
        "factors": int(model.item_factors.shape[1]),
        "ours_us_per_user": round(timings["ours"] / len(rows) * 1e6, 2),
        "bare_numpy_us_per_user": round(timings["bare"] / len(rows) * 1e6, 2),
        "ratio": round(timings["ours"] / timings["bare"], 3),
        "target_ratio_at_most": 2.0,
    }


def _timed(function: Any) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


async def _model_info(url: str, version: int) -> ModelInfo:
    client = await connect(url)
    try:
        return await ModelRegistry(client).get(version)
    finally:
        await client.aclose()


def scale(workdir: Path) -> dict[str, Any]:
    """A 100k-item, 1M-user model in one recommender: resident memory and request latency."""
    from implicit.cpu.als import AlternatingLeastSquares

    say("scale: 100,000 items x 1,000,000 users…")
    n_users, n_items, factors = 1_000_000, 100_000, 64
    generator = np.random.default_rng(1)
    model = AlternatingLeastSquares(factors=factors, random_state=0)
    model.user_factors = generator.standard_normal((n_users, factors), dtype=np.float32) * 0.1
    model.item_factors = generator.standard_normal((n_items, factors), dtype=np.float32) * 0.1
    buffer = io.BytesIO()
    model.save(buffer)
    store = ArtifactStore(f"file://{workdir / 'scale-artifacts'}")
    user_ids = np.array([f"u{index}" for index in range(n_users)])
    store.write_bundle(
        model_folder(1),
        {
            MODEL_FILE: buffer.getvalue(),
            IDS_FILE: npz_bytes(
                user_ids=user_ids, item_ids=np.array([f"i{i}" for i in range(n_items)])
            ),
        },
        {"version": 1},
    )
    server = RedisServer(workdir / "scale-redis").start()
    port = free_port()
    try:
        info = ModelInfo(
            version=1,
            status=ModelStatus.CANDIDATE,
            algorithm="als",
            created_at=datetime.now(UTC),
            snapshot_id="synthetic",
            artifact_url=store.url(model_folder(1)),
            data={"snapshot_created_at": time.time()},
        )
        asyncio.run(_publish(server.url, info))
        sampled = random.Random(9).sample(range(n_users), 1000)
        _known_to_the_feature_store([f"u{index}" for index in sampled], server.url)
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "ARTIFACT_URL": store.base_url,
            "LOG_LEVEL": "WARNING",
        }
        recommender = (
            ManagedProcess(
                "scale-recommender",
                uvicorn_argv("recommender.main:create_app", port),
                env=env,
                health_url=f"http://127.0.0.1:{port}/healthz",
                output=subprocess.DEVNULL,
            )
            .start()
            .wait_healthy(timeout=120)
        )
        loading = time.perf_counter()
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/model").json()["serving_version"] == 1,
            timeout=300,
            interval=0.5,
            what="the big model to load",
        )
        load_seconds = time.perf_counter() - loading
        latencies = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for index in sampled:
                started = time.perf_counter()
                response = http.get(f"/users/u{index}/recommendations?k=10")
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.json()["strategy"] == "personalized"
        rss = _rss_megabytes(recommender.pid)
        recommender.stop()
    finally:
        server.stop()
    latencies.sort()
    return {
        "users": n_users,
        "items": n_items,
        "factors": factors,
        "resident_memory_mb": rss,
        "factor_arrays_mb": round((n_users + 2 * n_items) * factors * 4 / 2**20),
        "load_seconds_after_start": round(load_seconds, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
    }


async def _publish(url: str, info: ModelInfo) -> None:
    client = await connect(url)
    try:
        await ModelRegistry(client).publish(info, reason="benchmark")
    finally:
        await client.aclose()


def _known_to_the_feature_store(users: list[str], redis_url: str) -> None:
    """Users the feature-store holds (an epoch, no newer events): a recommender personalises
    only users it has features of (an erased or forgotten user is never scored from a model
    that predates it)."""
    partitions = keys.Partitions(1)
    with redis.Redis.from_url(redis_url) as client, client.pipeline() as pipe:
        for user in users:
            mapping = {keys.META_EPOCH: 1, keys.META_UPDATED_AT: 0}
            pipe.hset(partitions.of(user).user_meta(user), mapping=mapping)
        pipe.execute()


def _rss_megabytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024)
    return -1
