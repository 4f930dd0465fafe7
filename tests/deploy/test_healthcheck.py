"""The images' health check (deploy/docker/healthcheck.py), run as the containers run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import redis

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/docker/healthcheck.py"


def healthcheck(*args: str, **env: str) -> int:
    return run_healthcheck(*args, **env).returncode


def run_healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def redbeat_lock_key() -> str:
    """The lock beat holds, by RedBeat's own rule for the worker's configuration."""
    from redbeat.schedulers import RedBeatConfig

    from retraining_worker.celery_app import app

    # RedBeat warns that it will stop reading broker_transport_options (the worker's
    # configuration, not this check's concern).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return str(RedBeatConfig(app).lock_key)


@pytest.mark.integration
def test_beat_is_healthy_exactly_while_its_lock_is_held(redis_url: str) -> None:
    # Celery's broker given explicitly, as compose and Kubernetes do: RedBeat lives beside it.
    where = {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}
    assert healthcheck("beat", **where) == 1
    client = redis.Redis.from_url(redis_url)
    client.set(redbeat_lock_key(), "beat-1", px=60_000)
    assert healthcheck("beat", **where) == 0
    client.delete(redbeat_lock_key())
    client.close()
    assert healthcheck("beat", **where) == 1


def test_only_loopback_urls_are_checked() -> None:
    refused = run_healthcheck("http://example.com/healthz")
    assert refused.returncode != 0
    assert "only loopback" in refused.stderr  # refused before any fetch, not a failed one
    assert healthcheck("http://127.0.0.1:9/healthz") == 1  # nothing listens on the discard port


def worker_image_environment(root: Path) -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's retraining-worker stage (worker and beat both get it),
    with each absolute path moved under ``root``, where nothing has created it: as in a fresh
    container."""
    dockerfile = SCRIPT.parent / "Dockerfile"
    stage = dockerfile.read_text().split("AS run-retraining-worker", 1)[1]
    lines = stage.split("\nENV ", 1)[1].splitlines()
    text = ""
    for line in lines:
        text += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            break
    pairs = dict(pair.split("=", 1) for pair in text.split())
    return {
        name: str(root / value.lstrip("/")) if value.startswith("/") else value
        for name, value in pairs.items()
    }


@pytest.mark.integration
def test_beat_started_with_the_worker_images_environment_becomes_healthy(
    redis_url: str, tmp_path: Path
) -> None:
    image = worker_image_environment(tmp_path)
    assert "PROMETHEUS_MULTIPROC_DIR" in image  # what made beat exit at start-up
    where = {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}
    beat = subprocess.Popen(
        [sys.executable, "-m", "retraining_worker", "beat"],
        env={**os.environ, **where, **image},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while healthcheck("beat", **where) != 0:
            assert beat.poll() is None, beat.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "beat never took its lock"
            time.sleep(0.5)
        assert beat.poll() is None
    finally:
        beat.terminate()
        beat.communicate(timeout=30)
