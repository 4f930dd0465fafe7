"""`make run`: the whole system on one machine, under one supervisor, with prefixed logs.

Uses the Redis at REDIS_URL if it answers, else starts its own (AOF persistence in .data/redis),
and the same for EPHEMERAL_REDIS_URL (default port 6391, no persistence: cache entries and
served-list records, which need no fsync on every write). With REDIS_CLUSTER=1 the data tier is
a local Redis Cluster of 3 masters and 3 replicas instead (ports from CLUSTER_BASE_PORT, default
7000; AOF and model artifacts in .data/cluster), with a standalone Redis for Celery beside it
(port 6392, AOF in .data/broker), 12 event partitions and every event on a replica before its
202.
Starts the feature-store, two recommender replicas, the gateway, the Celery worker and beat;
restarts any that exit (after a delay that doubles up to a minute; never given up); loads the
MovieLens demo unless DEMO=0; Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import DemoKeys, load_demo, print_examples

from recsys_shared.processes import ManagedProcess, RedisServer, uvicorn_argv
from recsys_shared.redis_cluster import RedisCluster
from recsys_shared.redis_url import is_cluster_url
from recsys_shared.settings import (
    DEFAULT_EPHEMERAL_REDIS_URL,
    DEFAULT_REDIS_URL,
    DEVELOPMENT_API_KEYS,
    redact_url,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
COLOURS = ["36", "32", "33", "35", "34", "31", "96", "92"]
_print_lock = threading.Lock()
#: What this run started and stops on its way out: a redis-server, or the local cluster.
Stoppable = RedisServer | RedisCluster


def say(message: str) -> None:
    with _print_lock:
        print(f"\033[1mrun\033[0m        | {message}", flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None
    colour: str
    process: ManagedProcess | None = None
    restarts: list[float] = field(default_factory=list)
    restart_at: float | None = None  # when the supervisor starts it again, once it exited

    def start(self) -> None:
        self.process = ManagedProcess(
            self.name,
            self.argv,
            env=self.env,
            cwd=ROOT,
            health_url=self.health_url,
            output=subprocess.PIPE,
        ).start()
        popen = self.process.process
        assert popen is not None
        stream = popen.stdout
        threading.Thread(target=self._relay, args=(stream,), daemon=True).start()

    def _relay(self, stream: object) -> None:
        prefix = f"\033[{self.colour}m{self.name:<11}\033[0m| "
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            with _print_lock:
                sys.stdout.write(prefix + raw.decode(errors="replace"))
                sys.stdout.flush()
        stream.close()  # type: ignore[attr-defined]  # the child exited: one pipe less per restart


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False
    finally:
        client.close()


def ensure_redis(
    url: str,
    started: list[Stoppable],
    *,
    name: str = "REDIS_URL",
    durable: bool = True,
    folder: str | None = None,
) -> None:
    """Use the Redis at ``url``, or start one there (listed in ``started`` before it starts,
    so a start that fails or is interrupted is stopped too)."""
    if redis_answers(url):
        say(f"using the Redis at {redact_url(url)} ({name})")
        return
    parts = urlsplit(url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(
            f"{name} {redact_url(url)} does not answer, and it is not local to start one."
        )
    where = DATA / (folder or ("redis" if durable else "redis-ephemeral"))
    server = RedisServer(where, port=parts.port or 6379, host="127.0.0.1", durable=durable)
    kept = (
        f"AOF in {server.data_dir}" if durable else "not persisted: cache entries and list records"
    )
    say(f"starting redis-server on port {server.port} ({kept})")
    started.append(server)
    server.start()


CLUSTER_BROKER_URL = "redis://127.0.0.1:6392/0"


def start_cluster(started: list[Stoppable]) -> dict[str, str]:
    """REDIS_CLUSTER=1: a local cluster (formed once, then restarted from its own files; a
    forming that was interrupted is finished) and a broker beside it; the settings that point
    the services at them."""
    base_port = int(os.environ.get("CLUSTER_BASE_PORT", "7000"))
    cluster = RedisCluster(DATA / "cluster", base_port=base_port, output=subprocess.DEVNULL)
    say(f"starting a Redis Cluster: 3 masters, 3 replicas on ports {base_port}-{base_port + 5}")
    started.append(cluster)
    cluster.start()
    broker_url = os.environ.get("CELERY_BROKER_URL", CLUSTER_BROKER_URL)
    ensure_redis(broker_url, started, name="CELERY_BROKER_URL", folder="broker")
    return {
        "REDIS_URL": cluster.url,
        # The cluster's models beside its data: a single Redis's version 1 is another model.
        "ARTIFACT_URL": f"file://{DATA / 'cluster' / 'artifacts'}",
        "CELERY_BROKER_URL": broker_url,
        "EVENT_PARTITIONS": os.environ.get("EVENT_PARTITIONS", "12"),
        "DURABLE_REPLICAS": os.environ.get("DURABLE_REPLICAS", "1"),
    }


def start_data_tier(started: list[Stoppable]) -> dict[str, str]:
    """The data tier's settings, starting its Redis (or cluster) when it is not running."""
    if os.environ.get("REDIS_CLUSTER", "0") == "1":
        return start_cluster(started)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    # A cluster of the user's own is used as it is (with their CELERY_BROKER_URL).
    if not is_cluster_url(redis_url):
        ensure_redis(redis_url, started)
    return {"REDIS_URL": redis_url}


def checkout_version() -> str:
    """``git describe`` of this checkout (``RECSYS_CODE_VERSION``: what lineage and /metrics
    name), or "" outside a git checkout (the packages' version is named then)."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT, capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return described.stdout.strip() if described.returncode == 0 else ""


def children(port: int, tier: dict[str, str], ephemeral_url: str) -> list[Child]:
    # Internal ports follow the gateway's: 8000 → 8101, 8102 (recommenders), 8201
    # (feature-store), 8301 (worker metrics); PORT=9000 moves them all to 91xx..93xx.
    recommenders = (port + 101, port + 102)
    feature_store, worker_metrics = port + 201, port + 301
    common = {
        **os.environ,
        "ARTIFACT_URL": f"file://{DATA / 'artifacts'}",
        **tier,
        "EPHEMERAL_REDIS_URL": ephemeral_url,
        "ENVIRONMENT": os.environ.get("ENVIRONMENT", "development"),
        "API_KEYS": os.environ.get("API_KEYS", DEVELOPMENT_API_KEYS),
        "LOG_JSON": os.environ.get("LOG_JSON", "false"),
        "FEATURE_STORE_URL": f"http://127.0.0.1:{feature_store}",
        "RECOMMENDER_URLS": ",".join(f"http://127.0.0.1:{each}" for each in recommenders),
        "PYTHONUNBUFFERED": "1",
        "RECSYS_CODE_VERSION": os.environ.get("RECSYS_CODE_VERSION") or checkout_version(),
    }
    python = sys.executable
    worker = [python, "-m", "retraining_worker"]
    specs = [
        (
            "feature-store",
            uvicorn_argv("feature_store.main:create_app", feature_store),
            feature_store,
            {},
        ),
        (
            "recommender1",
            uvicorn_argv("recommender.main:create_app", recommenders[0]),
            recommenders[0],
            {},
        ),
        (
            "recommender2",
            uvicorn_argv("recommender.main:create_app", recommenders[1]),
            recommenders[1],
            {},
        ),
        ("gateway", uvicorn_argv("gateway.main:create_app", port), port, {}),
        ("worker", [*worker, "worker"], worker_metrics, {"METRICS_PORT": str(worker_metrics)}),
        ("beat", [*worker, "beat"], None, {}),
    ]
    return [
        Child(
            name,
            argv,
            {**common, **extra},
            f"http://127.0.0.1:{health_port}/healthz" if health_port else None,
            COLOURS[index % len(COLOURS)],
        )
        for index, (name, argv, health_port, extra) in enumerate(specs)
    ]


#: Restarts within this many seconds count towards a child's next delay.
RESTART_WINDOW_SECONDS = 600.0


def restart_delay(recent_restarts: int, *, first: float = 1.0, most: float = 60.0) -> float:
    """How long a child that exited waits to start again: at once the first time, then a
    delay that doubles with each restart in the window, up to ``most`` (as Kubernetes backs
    off a crashing container). Never given up: a beat that exits while Redis is down must
    come back once it is up."""
    return 0.0 if recent_restarts == 0 else min(first * 2 ** (recent_restarts - 1), most)


def supervise(
    running: list[Child], stop: threading.Event, *, poll: float = 1.0, first: float = 1.0
) -> None:
    """Restart each child that exits, after :func:`restart_delay`."""
    while not stop.wait(poll):
        now = time.monotonic()
        for child in running:
            if child.process is None or child.process.running():
                continue
            if child.restart_at is None:
                child.restarts = [at for at in child.restarts if now - at < RESTART_WINDOW_SECONDS]
                delay = restart_delay(len(child.restarts), first=first)
                child.restart_at = now + delay
                say(f"{child.name} exited; restarting it" + (f" in {delay:g} s" if delay else ""))
            if now >= child.restart_at:
                child.restart_at = None
                child.restarts.append(now)
                child.start()


def stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C, SIGTERM or SIGHUP sets ``stop``, from a thread of its own: a handler that set the
    event itself could run while the main thread holds the event's lock (inside ``wait``
    or ``set``), and a second signal would then deadlock the supervisor."""
    received: list[int] = []

    def note(signum: int, _: object) -> None:
        received.append(signum)  # atomic, takes no lock

    def forward() -> None:
        while not received:
            time.sleep(0.1)
        stop.set()

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    # A closed terminal or a dropped SSH session: the services are in sessions of their own
    # and would outlive this supervisor.
    signal.signal(signal.SIGHUP, note)
    threading.Thread(target=forward, name="signals", daemon=True).start()


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def refuse_taken_ports(running: list[Child]) -> None:
    """Stop before starting anything when a service's port is taken (a `make run` still up,
    say): what holds it would answer the health checks for the new service, which would then
    fail to bind and be restarted until it gives up."""
    ports = [urlsplit(child.health_url).port for child in running if child.health_url]
    taken = sorted(port for port in ports if port is not None and listening(port))
    if taken:
        raise SystemExit(
            f"ports {taken} on 127.0.0.1 are in use (another `make run`?): stop what holds "
            "them, or move every port with PORT=..."
        )


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    demo = os.environ.get("DEMO", "1") != "0"
    keys = DemoKeys.from_api_keys(os.environ.get("API_KEYS", DEVELOPMENT_API_KEYS))
    if demo:  # before anything starts: the demo needs a client and an admin key
        keys.check_complete()
    refuse_taken_ports(children(port, {}, ""))
    DATA.mkdir(exist_ok=True)
    ephemeral_url = os.environ.get("EPHEMERAL_REDIS_URL", DEFAULT_EPHEMERAL_REDIS_URL)
    stop = threading.Event()
    # Before anything starts: a Ctrl-C from here on stops what was started, Redis included.
    stop_on_signals(stop)
    started: list[Stoppable] = []
    running: list[Child] = []
    try:
        tier = start_data_tier(started)
        ensure_redis(ephemeral_url, started, name="EPHEMERAL_REDIS_URL", durable=False)
        if not stop.is_set():
            running = children(port, tier, ephemeral_url)
            serve(running, port, stop, keys, demo=demo)
    finally:
        say("stopping…")
        for child in reversed(running):
            if child.process is not None:
                child.process.stop(timeout=10)
        for server in reversed(started):
            server.stop()
        say("stopped")


def serve(
    running: list[Child], port: int, stop: threading.Event, keys: DemoKeys, *, demo: bool
) -> None:
    """Start the services, load the demo, and supervise them until ``stop``."""
    for child in running:
        child.start()
    for child in running:
        assert child.process is not None
        child.process.wait_healthy(timeout=60)
    say(f"all services up; gateway on http://127.0.0.1:{port}")
    threading.Thread(target=supervise, args=(running, stop), daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    if demo:
        load_demo(base, keys, say=say, stop=stop)
    if not stop.is_set():
        print_examples(base, keys, demo=demo)
        say("press Ctrl-C to stop")
    while not stop.wait(0.5):
        pass


if __name__ == "__main__":
    main()
