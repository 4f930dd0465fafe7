"""The worker's reliability on real processes: a training task that keeps killing its worker
is given up after its bounded deliveries, and two beat processes send each periodic task once,
the standby taking over when the one holding RedBeat's lock dies."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from recsys_shared import keys
from recsys_shared.processes import RedisServer, wait_until
from recsys_shared.tasks import (
    CHECK_DRIFT,
    ERASE_FROM_ARTIFACTS,
    MONITORING_QUEUE,
    PRUNE,
    TRAIN_MODEL,
    TRAINING_QUEUE,
)
from recsys_shared.testing import (
    Stack,
    admin_headers,
    build_stack,
    single_tier,
    wait_for_task,
)
from recsys_shared.testing.fixtures import BESIDE_THE_REST

pytestmark = [pytest.mark.integration, BESIDE_THE_REST]

MAX_DELIVERIES = 2
#: The broker's visibility timeout in these tests: the least the worker's settings accept
#: with the shortest hard time limit (10 s) and a retry's 3 s wait.
VISIBILITY_TIMEOUT = 14
#: kombu's Redis transport keeps each delivered, unacknowledged message in this hash until it
#: is acknowledged, and gives it back to its queue from there.
UNACKED = "unacked"


# ── a task that keeps killing its worker ───────────────────────────────────────────────────


class HangingFeatureStore:
    """A feature-store that takes each snapshot request and never answers it: a training
    stays in flight, its lock held and its message unacknowledged, until the test kills the
    process running it. Counting the requests tells the test exactly when a delivery of the
    task has begun training."""

    def __init__(self) -> None:
        self.requests = 0
        self._arrived = threading.Condition()
        self._released = threading.Event()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with store._arrived:
                    store.requests += 1
                    store._arrived.notify_all()
                store._released.wait()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for_request(self, number: int, *, timeout: float) -> None:
        """Until the ``number``-th snapshot request has arrived."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self.requests >= number, timeout=timeout):
                raise TimeoutError(
                    f"Snapshot request {number} did not arrive within {timeout:.0f}s "
                    f"({self.requests} so far)."
                )

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feature_store() -> Iterator[HangingFeatureStore]:
    store = HangingFeatureStore()
    yield store
    store.close()


@contextlib.contextmanager
def hanging_stack(
    redis_server: RedisServer, feature_store: HangingFeatureStore, tmp_path: Path, **env: str
) -> Iterator[Stack]:
    """A gateway and a worker whose trainings hang on the feature-store until killed."""
    tier = single_tier(redis_server)
    tier.flush()
    stack = build_stack(tier, tmp_path, FEATURE_STORE_URL=feature_store.url, **env)
    try:
        stack.start("gateway")
        stack.start("worker")
        yield stack
    finally:
        stack.close()


@pytest.fixture
def worker_stack(
    redis_server: RedisServer, feature_store: HangingFeatureStore, tmp_path: Path
) -> Iterator[Stack]:
    with hanging_stack(
        redis_server,
        feature_store,
        tmp_path,
        MAX_DELIVERIES=str(MAX_DELIVERIES),
        BROKER_VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        TASK_TIME_LIMIT_SECONDS="10",
        # A training given back at once (its pool process died) finds the dead one's lock
        # still held and retries a quarter of this later, until the lock has expired.
        LOCK_TTL_SECONDS="12",
    ) as stack:
        yield stack


def pool_processes(pid: int) -> list[int]:
    """The children of ``pid``: the processes of a Celery worker's prefork pool."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def retrain(stack: Stack) -> str:
    response = httpx.post(
        f"{stack.gateway}/v1/models/retrain", json={}, headers=admin_headers(), timeout=10
    )
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def assert_given_up(stack: Stack, task_id: str, feature_store: HangingFeatureStore) -> int:
    """The task ended ``abandoned``, trained exactly MAX_DELIVERIES times, and left no
    message behind to be delivered again; its deliveries, retries included."""
    result = wait_for_task(stack.gateway, task_id, timeout=60)
    assert result["state"] == "SUCCESS", result
    outcome = result["result"]
    assert isinstance(outcome, dict)
    assert outcome["status"] == "abandoned", outcome
    assert feature_store.requests == MAX_DELIVERIES
    broker = stack.tier.broker_inspector()
    try:
        assert broker.llen(TRAINING_QUEUE) == 0
        assert broker.hlen(UNACKED) == 0, "a message left unacknowledged would come back"
        deliveries = int(broker.get(keys.task_deliveries(task_id)) or 0)
    finally:
        broker.close()
    assert deliveries > MAX_DELIVERIES
    assert f"delivered {deliveries} times" in outcome["reasons"][0]
    # Counted as a training run's outcome, as the dashboard's runs-by-outcome panel reads it.
    exposition = httpx.get(f"{stack.url('worker')}/metrics", timeout=10).text
    assert 'recsys_training_runs_total{outcome="abandoned"} 1.0' in exposition
    return deliveries


def test_a_task_that_keeps_killing_its_pool_process_ends_abandoned(
    worker_stack: Stack, feature_store: HangingFeatureStore
) -> None:
    """The pool process dies (the kernel's OOM killer, a crash in native code): Celery's main
    process rejects the message back to its queue at once (late acks, reject on worker
    lost), starts a new pool process and delivers it again."""
    task_id = retrain(worker_stack)
    worker = worker_stack.processes["worker"]
    for delivery in range(1, MAX_DELIVERIES + 1):
        feature_store.wait_for_request(delivery, timeout=40)
        (pool,) = pool_processes(worker.pid)
        os.kill(pool, signal.SIGKILL)
    deliveries = assert_given_up(worker_stack, task_id, feature_store)
    # The first redelivery found the dead training's lock held and retried: retries are
    # deliveries too, and none was held against the task.
    assert deliveries > MAX_DELIVERIES + 1
    assert worker.running(), "only the pool process was killed"


def test_a_task_that_keeps_killing_its_whole_worker_ends_abandoned(
    worker_stack: Stack, feature_store: HangingFeatureStore
) -> None:
    """The whole worker dies (its container is killed) and is restarted at once, as its
    supervisor would: nobody is left to reject the message, so Redis gives it back after the
    visibility timeout, and the restarted worker delivers it again."""
    task_id = retrain(worker_stack)
    for delivery in range(1, MAX_DELIVERIES + 1):
        feature_store.wait_for_request(delivery, timeout=VISIBILITY_TIMEOUT + 30)
        worker_stack.kill("worker")
        worker_stack.start("worker")
    assert_given_up(worker_stack, task_id, feature_store)


# ── two beat processes ─────────────────────────────────────────────────────────────────────

#: Each periodic task of the worker's beat schedule, by its task name and keyword arguments,
#: with its period in these tests.
PERIODIC = {
    (TRAIN_MODEL, "{}"): ("scheduled-retrain", 4.0),
    (TRAIN_MODEL, '{"search": true}'): ("scheduled-search", 6.0),
    (CHECK_DRIFT, "{}"): ("drift-check", 3.0),
    (ERASE_FROM_ARTIFACTS, "{}"): ("erase-from-artifacts", 5.0),
    (PRUNE, "{}"): ("prune", 7.0),
}
PERIODS = dict(PERIODIC.values())
#: Long enough for every periodic task to be sent at least once.
WINDOW = max(PERIODS.values()) + 2
BEAT_LOCK_TIMEOUT = 10
#: The beat's loop (``beat_max_loop_interval``): a beat waiting for the lock tries it this often.
BEAT_LOOP = 5


@dataclass(frozen=True)
class Sent:
    """A periodic task's message as it reached its queue."""

    entry: str
    sender: int  # the pid of the process that sent it
    at: float  # time.monotonic() when the test saw it


class Queues:
    """What the beats send, taken off the worker's queues (no worker runs in these tests)."""

    def __init__(self, broker: redis.Redis) -> None:
        self.broker = broker
        self.sent: list[Sent] = []

    def take(self) -> None:
        for queue in (TRAINING_QUEUE, MONITORING_QUEUE):
            while (raw := self.broker.rpop(queue)) is not None:
                self.sent.append(self._parse(str(raw)))

    @staticmethod
    def _parse(raw: str) -> Sent:
        message = json.loads(raw)
        headers = message["headers"]
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        entry, _ = PERIODIC[(headers["task"], json.dumps(kwargs, sort_keys=True))]
        # Celery names the sender of a message "gen<pid>@<host>".
        sender = int(headers["origin"].split("@")[0].removeprefix("gen"))
        return Sent(entry, sender, time.monotonic())

    def watch(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.take()
            time.sleep(0.05)

    def wait_for(self, sender: int, *, timeout: float) -> Sent:
        """Until ``sender`` has sent something; its first message."""

        def sent() -> bool:
            self.take()
            return any(message.sender == sender for message in self.sent)

        wait_until(sent, timeout=timeout, interval=0.05, what=f"a message from process {sender}")
        return next(message for message in self.sent if message.sender == sender)


def assert_once_per_period(sent: list[Sent]) -> None:
    """Each periodic task was sent at most once per period: never two messages of the same
    task within half its period (what two beats firing it side by side would give)."""
    for entry, period in PERIODS.items():
        times = [message.at for message in sent if message.entry == entry]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap > period / 2 for gap in gaps), (entry, period, gaps)


@pytest.fixture
def beat_stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[Stack]:
    tier = single_tier(redis_server)
    tier.flush()
    stack = build_stack(
        tier,
        tmp_path,
        SCHEDULED_RETRAIN_SECONDS=str(PERIODS["scheduled-retrain"]),
        SCHEDULED_SEARCH_SECONDS=str(PERIODS["scheduled-search"]),
        DRIFT_CHECK_SECONDS=str(PERIODS["drift-check"]),
        ERASURE_REWRITE_SECONDS=str(PERIODS["erase-from-artifacts"]),
        PRUNE_SECONDS=str(PERIODS["prune"]),
        BEAT_LOCK_TIMEOUT_SECONDS=str(BEAT_LOCK_TIMEOUT),
    )
    try:
        yield stack
    finally:
        stack.close()


def test_two_beats_send_each_periodic_task_once_and_the_standby_takes_over(
    beat_stack: Stack,
) -> None:
    """A second beat waits for RedBeat's lock while the first sends; once the first is
    killed, the second sends the schedule on from where the first left it."""
    broker = beat_stack.tier.broker_inspector()
    queues = Queues(broker)
    try:
        first = beat_stack.start("beat1").pid
        queues.wait_for(first, timeout=60)  # it holds RedBeat's lock: it is sending
        second = beat_stack.start("beat2").pid

        queues.watch(WINDOW)
        before_the_kill = list(queues.sent)
        assert {message.sender for message in before_the_kill} == {first}, "the second waits"
        assert {message.entry for message in before_the_kill} == set(PERIODS)
        assert_once_per_period(before_the_kill)

        # kill -9: the lock is not released; it expires within its timeout.
        beat_stack.kill("beat1")
        killed_at = time.monotonic()
        queues.take()  # what it sent before it died
        since_kill = len(queues.sent)
        taken_over = queues.wait_for(second, timeout=BEAT_LOCK_TIMEOUT + BEAT_LOOP + 30)
        waited = taken_over.at - killed_at
        assert waited <= BEAT_LOCK_TIMEOUT + BEAT_LOOP + 2, f"took over after {waited:.1f}s"

        queues.watch(WINDOW)
        after = queues.sent[since_kill:]
        assert {message.sender for message in after} == {second}
        assert {message.entry for message in after} == set(PERIODS)
        # Across the takeover too: the missed runs are not caught up in a burst.
        assert_once_per_period(queues.sent)
    finally:
        broker.close()


# ── a worker stopped while it trains ───────────────────────────────────────────────────────


def test_a_worker_stopped_mid_training_gives_the_task_back_at_once(
    redis_server: RedisServer, feature_store: HangingFeatureStore, tmp_path: Path
) -> None:
    """SIGTERM to the worker's main process (what Kubernetes sends in a rolling update): the
    hanging training gets WORKER_SOFT_SHUTDOWN_SECONDS, is cancelled, and its message is back
    in the queue when the worker has exited, not after the visibility timeout (10 minutes
    here); the next worker trains it."""
    with hanging_stack(
        redis_server,
        feature_store,
        tmp_path,
        BROKER_VISIBILITY_TIMEOUT_SECONDS="600",
        TASK_TIME_LIMIT_SECONDS="60",
        WORKER_SOFT_SHUTDOWN_SECONDS="1",
        LOCK_TTL_SECONDS="5",  # the cancelled training's lock expires soon after
    ) as stack:
        worker = stack.processes["worker"]
        retrain(stack)
        feature_store.wait_for_request(1, timeout=30)
        assert worker.process is not None

        worker.process.send_signal(signal.SIGTERM)  # the main process only, as a kubelet does
        worker.process.wait(timeout=30)

        broker = stack.tier.broker_inspector()
        try:
            assert broker.hlen(UNACKED) == 0, "left to the visibility timeout"
            assert broker.llen(TRAINING_QUEUE) == 1
        finally:
            broker.close()
        stack.start("worker")
        feature_store.wait_for_request(2, timeout=60)  # trained again, long before 600 s
