"""`make run`'s supervisor restarts a service that exits, with a delay that doubles with each
restart, and never gives up: a beat that exits while Redis is down comes back once it is up
(it used to be left dead after five exits in a minute)."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path

from .conftest import LoadScript


def test_the_delay_doubles_up_to_a_minute(load_script: LoadScript) -> None:
    run = load_script("run")

    delays = [run.restart_delay(restarts) for restarts in range(9)]

    assert delays == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_a_child_that_keeps_exiting_is_restarted_again_and_again(
    load_script: LoadScript, tmp_path: Path
) -> None:
    run = load_script("run")
    starts = tmp_path / "starts"
    exits_at_once = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('.')"]
    child = run.Child("crasher", exits_at_once, dict(os.environ), None, "36")
    child.start()
    stop = threading.Event()
    supervisor = threading.Thread(
        target=run.supervise, args=([child], stop), kwargs={"poll": 0.02, "first": 0.02}
    )
    supervisor.start()
    try:
        deadline = time.monotonic() + 60
        while not starts.exists() or len(starts.read_text()) < 8:  # past the old limit of 5
            assert time.monotonic() < deadline, "the supervisor stopped restarting it"
            time.sleep(0.05)
    finally:
        stop.set()
        supervisor.join()
        assert child.process is not None
        child.process.stop()

    gaps = [b - a for a, b in itertools.pairwise(child.restarts)]
    assert len(gaps) >= 6
    assert gaps[5] > 2 * gaps[0]  # backing off, not restarting every poll
