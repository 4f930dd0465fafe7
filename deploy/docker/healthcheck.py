"""Container health check, copied into every image as /app/healthcheck.py.

``python /app/healthcheck.py http://127.0.0.1:8000/healthz`` succeeds when the URL answers 2xx.
``python /app/healthcheck.py beat`` (worker image only) succeeds when Celery beat holds its
RedBeat lock, which beat renews every few seconds while it runs. The lock lives where the
worker's Celery app puts RedBeat (its ``redbeat_redis_url``, else its broker): the standalone
broker Redis (``CELERY_BROKER_URL``) when the data is on a cluster.
Only the standard library and what the image already has: no curl in a slim image.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def http_ok(url: str) -> bool:
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit(f"healthcheck: only loopback URLs are checked, got '{url}'")
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback only
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def beat_holds_lock() -> bool:
    import redis

    from retraining_worker.celery_app import app

    # RedBeat's own rule for the lock key (redbeat.schedulers.RedBeatConfig), without building
    # a RedBeatConfig, which logs deprecation notices on every call.
    prefix = app.conf.get("redbeat_key_prefix") or "redbeat:"
    lock_key = app.conf.get("redbeat_lock_key") or f"{prefix}:lock"
    if not lock_key.startswith(prefix):
        lock_key = prefix + lock_key
    # Read from the app's configuration, not from a setting's name, so the check follows
    # wherever the worker's configuration puts RedBeat.
    url = app.conf.get("redbeat_redis_url") or app.conf.broker_url
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.exists(lock_key))
    except redis.RedisError:
        return False
    finally:
        client.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: healthcheck.py URL | beat")
    healthy = beat_holds_lock() if argv[0] == "beat" else http_ok(argv[0])
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
