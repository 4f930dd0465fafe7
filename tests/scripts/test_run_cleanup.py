"""`make run` (scripts/run.py) stops the Redis servers it started when a later step of its
start fails, instead of leaving them running for the next `make run` to stumble on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import redis

from recsys_shared.processes import free_port

from .conftest import LoadScript


def test_a_start_that_fails_after_starting_redis_stops_that_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_script: LoadScript
) -> None:
    run = load_script("run")
    monkeypatch.setattr(run, "DATA", tmp_path)  # never the checkout's own .data
    monkeypatch.setattr(run, "stop_on_signals", lambda stop: None)  # the test's own handlers
    data_port = free_port()
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.setenv("DEMO", "0")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{data_port}/0")
    # Silent and not one make run starts itself: the start stops after the data Redis is up.
    monkeypatch.setenv("EPHEMERAL_REDIS_URL", f"redis://127.0.0.2:{free_port()}/0")
    try:
        with pytest.raises(SystemExit, match="not local to start one"):
            run.main()

        assert (tmp_path / "redis").is_dir()  # the data Redis had been started there...
        assert not run.listening(data_port)  # ...and was stopped
    finally:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            redis.Redis(port=data_port).shutdown(nosave=True)
