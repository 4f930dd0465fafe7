"""Load shapes: ``LoadTestShape`` classes sized by ``--users``, ``--spawn-rate`` and ``--run-time``.

``LOADTEST_SHAPE`` picks one (``steady`` by default): the locustfile marks it concrete, so it is
the one shape Locust finds. ``none`` leaves Locust's plain ``-u``/``-r``/``-t`` behaviour.
"""

from __future__ import annotations

import math

from locust import LoadTestShape

#: The load a shape asks for: (users, spawn rate).
Load = tuple[int, float]
#: What a shape's ``tick`` answers: the load, or None to end the run.
Tick = Load | None


class SizedShape(LoadTestShape):
    """Base of the shapes: reads its size from Locust's own options and ends the run at
    ``--run-time``; a shape says what load it wants until then (``load_at``)."""

    abstract = True
    use_common_options = True

    def size(self) -> tuple[int, float, float]:
        """(users, spawn rate, run time in seconds) as given on the command line."""
        assert self.runner is not None
        options = self.runner.environment.parsed_options
        users = int(getattr(options, "num_users", None) or 20)
        rate = float(getattr(options, "spawn_rate", None) or users)
        run_time = float(getattr(options, "run_time", None) or 60)
        return users, rate, run_time

    def elapsed(self) -> float:
        """Seconds since the shape started (Locust's ``get_run_time``, typed)."""
        return float(self.get_run_time())  # type: ignore[no-untyped-call]

    def tick(self) -> Tick:
        users, rate, run_time = self.size()
        elapsed = self.elapsed()
        return None if elapsed >= run_time else self.load_at(elapsed, users, rate, run_time)

    def load_at(self, elapsed: float, users: int, rate: float, run_time: float) -> Load:
        """(users, spawn rate) ``elapsed`` seconds into a run of ``run_time`` seconds."""
        raise NotImplementedError


class SteadyShape(SizedShape):
    """Ramp up at the spawn rate, then hold ``--users`` until ``--run-time``."""

    abstract = True  # until the locustfile picks it

    def load_at(self, elapsed: float, users: int, rate: float, run_time: float) -> Load:
        return users, rate


class RampShape(SizedShape):
    """From one user up to ``--users`` linearly over 80 % of the run, then hold: finds the knee."""

    abstract = True  # until the locustfile picks it

    def load_at(self, elapsed: float, users: int, rate: float, run_time: float) -> Load:
        return max(1, math.ceil(users * min(1.0, elapsed / (0.8 * run_time)))), rate


class SpikeShape(SizedShape):
    """A quarter of ``--users`` for 40 % of the run, all of them at once for 20 %, then back
    to the quarter for the last 40 %: does the system absorb a burst and recover after it?"""

    abstract = True  # until the locustfile picks it

    def load_at(self, elapsed: float, users: int, rate: float, run_time: float) -> Load:
        burst = max(rate, float(users))  # the whole spike within about a second
        if 0.4 * run_time <= elapsed < 0.6 * run_time:
            return users, burst
        return max(1, users // 4), burst
