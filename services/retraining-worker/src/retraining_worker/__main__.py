"""Entrypoint: ``python -m retraining_worker worker|beat``.

``worker`` also serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``METRICS_PORT`` from a
thread of the main process; metrics from the pool's child processes are collected through
Prometheus' multiprocess mode, set up here before anything imports the client library.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

    from retraining_worker.config import Settings


def _prepare_environment() -> None:
    # SIGTERM (a rolling update, docker stop) starts Celery's soft shutdown, not the warm one
    # (see celery_app's worker_soft_shutdown_timeout); read by billiard when it is imported.
    os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    # implicit fits with its own threads; OpenBLAS threads on top would oversubscribe the cores.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not metrics_dir:
        metrics_dir = tempfile.mkdtemp(prefix="recsys-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    else:
        # Files of a previous run would add its counts to ours.
        shutil.rmtree(metrics_dir, ignore_errors=True)
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    role = args[0] if args else "worker"
    if role not in {"worker", "beat"}:
        raise SystemExit(f"usage: retraining-worker worker|beat [celery options]; got '{role}'")
    if role == "worker":
        _prepare_environment()
    else:
        # Beat serves no metrics. The image sets this for the worker, whose pool shares them
        # through its files; beat importing the tasks' metrics under it would open files in
        # a directory only the worker creates, and exit at start-up.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from recsys_shared.logging import configure_logging
    from retraining_worker.config import get_settings

    settings = get_settings()
    configure_logging(settings.service_name, level=settings.log_level, json_lines=settings.log_json)
    from recsys_shared.durability import NotDurable
    from recsys_shared.layout import LayoutMismatch
    from retraining_worker.celery_app import app

    try:
        asyncio.run(_start_up_checks(settings, role))
    except (LayoutMismatch, NotDurable) as refused:  # the detail says what to set
        raise SystemExit(f"retraining-worker ({role}): {refused.detail}") from None
    if role == "worker":
        _run_worker(app, settings, args[1:])
    else:
        app.start(["beat", "--loglevel", settings.log_level, *args[1:]])


async def _start_up_checks(settings: Settings, role: str) -> None:
    """Before the first task: the worker's data tier is partitioned as the tasks will read
    it; a broker of its own keeps its messages (checked as the gateway checks it: worker and
    beat may be given another ``CELERY_BROKER_URL`` than the gateway's)."""
    from recsys_shared.durability import check_durability_at
    from recsys_shared.layout import check_layout_at

    if role == "worker":
        await check_layout_at(settings.redis_dsn, settings.partitions, name=role)
    if settings.broker_dsn != settings.redis_dsn:
        await check_durability_at(
            settings.broker_dsn, settings, what="CELERY_BROKER_URL", replicas=None, name=role
        )


def _run_worker(app: Celery, settings: Settings, options: list[str]) -> None:
    from recsys_shared.tasks import MONITORING_QUEUE, TRAINING_QUEUE
    from retraining_worker.health import start_health_server

    start_health_server(settings)
    app.worker_main(
        [
            "worker",
            "--loglevel",
            settings.log_level,
            "--queues",
            f"{TRAINING_QUEUE},{MONITORING_QUEUE}",
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            *options,
        ]
    )


if __name__ == "__main__":
    main()
