"""The pool's metric files stay bounded by the live processes: the files of processes that
exited are folded into one per kind, and what a scrape reports is unchanged by it. Real
processes write them, as the pool's children do, and exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from retraining_worker.metric_files import fold_exited

#: A pool child's life in short: a task counted, a training timed, a drift check's PSI set.
_CHILD = """
import sys
from retraining_worker import metrics
metrics.TASKS.labels("recsys.train_model", "success").inc()
metrics.TRAINING_SECONDS.observe(float(sys.argv[1]))
metrics.DRIFT_PSI.set(float(sys.argv[1]))
"""


def _child(folder: Path, value: float) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", _CHILD, str(value)], env=env, check=True, timeout=60)


def _scraped(folder: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    samples: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#") and "recsys_" in line:
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_exited_processes_are_folded_into_one_file_per_kind_with_the_same_figures(
    tmp_path: Path,
) -> None:
    for value in (5.0, 50.0, 500.0):  # three children, one after the other
        _child(tmp_path, value)
    assert len(list(tmp_path.glob("counter_*.db"))) == 3
    before = _scraped(tmp_path)
    assert before['recsys_celery_tasks_total{state="success",task="recsys.train_model"}'] == 3

    assert fold_exited(tmp_path) == 12  # four kinds of file from each
    assert sorted(file.name for file in tmp_path.glob("*.db")) == [
        "counter_exited.db",
        "gauge_mostrecent_exited.db",
        "histogram_exited.db",
    ]
    # The same totals, buckets and latest gauge; no series of an exited process's own.
    per_process = {name for name in before if 'pid="' in name}
    assert len(per_process) == 3
    assert _scraped(tmp_path) == {
        name: value for name, value in before.items() if name not in per_process
    }
    assert before["recsys_drift_item_psi"] == 500.0

    _child(tmp_path, 7.0)  # a later child: folded into the same files
    fold_exited(tmp_path)
    after = _scraped(tmp_path)
    assert after['recsys_celery_tasks_total{state="success",task="recsys.train_model"}'] == 4
    assert after["recsys_training_duration_seconds_count"] == 4
    assert after["recsys_drift_item_psi"] == 7.0
    assert len(list(tmp_path.glob("*.db"))) == 3


def test_a_live_processes_files_are_left_alone(tmp_path: Path) -> None:
    _child(tmp_path, 1.0)
    assert fold_exited(tmp_path, is_alive=lambda pid: True) == 0
    assert not list(tmp_path.glob("*_exited.db"))
