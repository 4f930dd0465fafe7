"""The pool's metric files, bounded by the processes alive, not by the worker's uptime.

Prometheus' multiprocess mode gives every process files of its own in
``PROMETHEUS_MULTIPROC_DIR`` (``counter_<pid>.db``, ``histogram_<pid>.db``,
``gauge_mostrecent_<pid>.db``), and keeps those of a process that has exited so that its
counts still add up. The pool replaces a child after ``worker_max_tasks_per_child`` tasks
(every few hours with a drift check every 5 minutes), so the folder (an emptyDir of 64 MiB in
Kubernetes) and the work of every scrape would grow for as long as the worker runs. Before
each scrape, :func:`fold_exited` folds the files of exited processes into one file per kind
(``<kind>_exited.db``) and deletes them: counters and histograms summed, a "mostrecent"
gauge's latest value kept. A per-process gauge ("all", or a "live" mode: the shared
``recsys_ephemeral_writes_shedding`` is one) of an exited process describes nothing alive, and
would add a ``pid`` series per child forever: its file is deleted, as the library's
``mark_process_dead`` does for the "live" modes. The "max", "min" and "sum" gauges are left
as they are (the worker has none).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

#: Where the exited processes' values go, in place of a pid.
EXITED = "exited"
#: The kinds folded: summed, or (the gauges) the latest value.
SUMMED = ("counter", "histogram")
LATEST = ("gauge_mostrecent",)
#: The kinds of a process's own gauges: deleted once it has exited.
PER_PROCESS = (
    "gauge_all",
    "gauge_liveall",
    "gauge_livesum",
    "gauge_livemax",
    "gauge_livemin",
    "gauge_livemostrecent",
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def fold_exited(folder: Path, is_alive: Callable[[int], bool] = alive) -> int:
    """Fold the files of exited processes into ``<kind>_exited.db``; how many were folded.

    Not safe beside a concurrent collection: the caller holds the scrape's lock.
    """
    exited: dict[str, list[Path]] = {}
    for file in folder.glob("*.db"):
        kind, _, pid = file.stem.rpartition("_")
        if kind in SUMMED + LATEST + PER_PROCESS and pid.isdigit() and not is_alive(int(pid)):
            exited.setdefault(kind, []).append(file)
    for kind, files in exited.items():
        if kind not in PER_PROCESS:
            archive = folder / f"{kind}_{EXITED}.db"
            _write(archive, _values([archive, *files], latest=kind in LATEST))
        for file in files:
            file.unlink()
    return sum(len(files) for files in exited.values())


def _values(files: Iterable[Path], *, latest: bool) -> dict[str, tuple[float, float]]:
    """Every key's value and timestamp over ``files``: summed, or the latest one."""
    values: dict[str, tuple[float, float]] = {}
    for file in files:
        if not file.exists():
            continue
        read = MmapedDict.read_all_values_from_file(str(file))  # type: ignore[no-untyped-call]
        for key, value, timestamp, _ in read:
            before = values.get(key)
            if before is None:
                values[key] = (value, timestamp)
            elif latest:
                values[key] = max(before, (value, timestamp), key=lambda pair: pair[1])
            else:
                values[key] = (before[0] + value, max(before[1], timestamp))
    return values


def _write(archive: Path, values: dict[str, tuple[float, float]]) -> None:
    """A new file in place of ``archive`` at once: a collection never reads half of one."""
    building = archive.with_name(archive.name + ".new")  # not *.db: no collector reads it
    building.unlink(missing_ok=True)
    written = MmapedDict(str(building))  # type: ignore[no-untyped-call]
    try:
        for key, (value, timestamp) in values.items():
            written.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        written.close()  # type: ignore[no-untyped-call]
    building.replace(archive)
