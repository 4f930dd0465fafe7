"""`make test` runs pytest in two pytest-xdist workers: the modules marked ``BESIDE_THE_REST``
on one, every other test in collection order on the other. Checked on a small suite run with the
Makefile's own options, since pytest-xdist stops grouping silently when it cannot (it did on
pytest 9.2: pytest-xdist#1386)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_RECORD = """
import os
from pathlib import Path


def record(name: str) -> None:
    with (Path(__file__).parent / "ran.txt").open("a") as ran:
        ran.write(f"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""
_WAITING = """
from recsys_shared.testing.fixtures import BESIDE_THE_REST
from record import record

pytestmark = BESIDE_THE_REST
"""


def makefile_options() -> list[str]:
    """The options `make test` gives pytest for the split (the Makefile's ``BESIDE``)."""
    found = re.search(r"^BESIDE := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile sets BESIDE"
    return found.group(1).split()


def write_suite(folder: Path) -> None:
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "conftest.py").write_text('pytest_plugins = ["recsys_shared.testing.fixtures"]\n')
    (folder / "record.py").write_text(_RECORD)
    tests = "".join(f"\n\ndef test_{n}() -> None:\n    record('{{}}{n}')\n" for n in range(4))
    (folder / "test_a_waits.py").write_text(_WAITING + tests.replace("{}", "waits"))
    for module in ("b", "c"):
        body = "from record import record\n" + tests.replace("{}", module)
        (folder / f"test_{module}_works.py").write_text(body)


def test_the_marked_modules_run_on_one_worker_and_the_rest_in_order_on_the_other(
    tmp_path: Path,
) -> None:
    write_suite(tmp_path)

    # Not this run's own settings: when it runs in an xdist worker, its worker's variables.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *makefile_options(), "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    workers: defaultdict[str, set[str]] = defaultdict(set)
    ran: defaultdict[str, list[str]] = defaultdict(list)
    for line in (tmp_path / "ran.txt").read_text().splitlines():
        name, worker = line.split()
        workers[name.rstrip("0123456789")].add(worker)
        ran[worker].append(name)
    assert len(workers["waits"]) == 1, workers
    assert workers["b"] == workers["c"], workers
    assert workers["b"].isdisjoint(workers["waits"]), workers
    (rest,) = workers["b"]
    assert ran[rest] == [f"{module}{n}" for module in ("b", "c") for n in range(4)]
