"""Is the Redis that holds durable state set up so that nothing acknowledged is lost?

Checked at start-up by the gateway (events) and the feature-store (features), on the data
tier every service writes to, and by the gateway, the worker and beat on Celery's broker when
``CELERY_BROKER_URL`` names a Redis of its own (an evicted or lost message is a lost erasure
or training run until the next scheduled one). Per primary, from ``CONFIG GET``:

- ``maxmemory-policy`` must be ``noeviction``: any other policy lets Redis evict idempotency
  markers, unapplied events or Celery messages to make room (a managed Redis's default,
  ``volatile-lru``, is one of them);
- an acknowledged write must survive a crash: ``appendonly yes`` with ``appendfsync always``,
  or replication that the gateway waits for (``DURABLE_REPLICAS`` ≥ 1, for a managed cluster
  without AOF). Nothing waits for the broker's replicas (kombu does not ``WAIT``), so for it
  only AOF counts.

In production a failed check stops the service (``REDIS_DURABILITY_CHECK=warn`` only warns);
elsewhere it warns. A Redis that refuses ``CONFIG`` (most managed ones), or does not answer at
start-up, cannot be checked: the service says so and starts, and the operator answers for the
settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from recsys_shared.errors import RecsysError, StoreError, StoreUnavailable
from recsys_shared.redis import RedisClient, connect
from recsys_shared.settings import Environment, ServiceSettings

log = logging.getLogger(__name__)

_SETTINGS = ("appendonly", "appendfsync", "maxmemory-policy")


class NotDurable(RecsysError):
    """The Redis would lose or evict acknowledged writes; the service refuses to start."""


def problems_of(config: dict[str, str], *, replicas: int | None) -> list[str]:
    """What is wrong with one primary's configuration, in words an operator can act on.
    ``replicas`` is how many replicas acknowledge each write, ``None`` where nothing waits for
    them (then only AOF makes a write survive a crash, and the advice says so)."""
    problems = []
    policy = config.get("maxmemory-policy", "")
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is '{policy}': at its memory limit Redis would evict keys "
            "(idempotency markers, unapplied events, task messages); set 'noeviction'"
        )
    fsync_every_write = config.get("appendonly") == "yes" and config.get("appendfsync") == "always"
    if not fsync_every_write and not replicas:
        or_replicas = (
            "" if replicas is None else ", or DURABLE_REPLICAS >= 1 on a deployment with replicas"
        )
        problems.append(
            f"appendonly={config.get('appendonly')} appendfsync={config.get('appendfsync')}: "
            "an acknowledged write may be lost in a crash; set appendonly yes and appendfsync "
            f"always{or_replicas}"
        )
    return problems


async def check_durability(
    client: RedisClient, settings: ServiceSettings, *, what: str, replicas: int | None
) -> list[str]:
    """Check every primary of ``client`` (named ``what`` in messages; ``replicas`` as in
    :func:`problems_of`); the problems found. Raises :class:`NotDurable` in production unless
    ``REDIS_DURABILITY_CHECK=warn``."""
    try:
        configs: Sequence[dict[str, str]] = await client.on_primaries("CONFIG", "GET", *_SETTINGS)
    except StoreError as error:
        log.warning(
            "%s refuses CONFIG GET (%s): its durability cannot be checked; make sure it runs "
            "with maxmemory-policy noeviction and persistence or replicas",
            what,
            error.code,
        )
        return []
    except StoreUnavailable as error:
        # A service started while Redis is down still starts: /readyz says so, writes answer
        # 503. The check is the start-up's; it is not retried.
        log.warning("%s did not answer; its durability was not checked: %s", what, error.detail)
        return []
    problems = sorted(
        {problem for config in configs for problem in problems_of(config, replicas=replicas)}
    )
    if not problems:
        return []
    message = f"{what} ({client.target.redacted()}) is not durable: " + "; ".join(problems)
    enforce = (
        settings.environment is Environment.PRODUCTION
        and settings.redis_durability_check == "enforce"
    )
    if enforce:
        raise NotDurable(message + ". REDIS_DURABILITY_CHECK=warn starts anyway.")
    log.warning(message)
    return problems


async def check_durability_at(
    url: str, settings: ServiceSettings, *, what: str, replicas: int | None, name: str
) -> list[str]:
    """:func:`check_durability` for a process that has no client of that Redis yet (the
    worker and beat, before Celery starts); ``name`` names the connection."""
    client = await connect(url, name=name)
    try:
        return await check_durability(client, settings, what=what, replicas=replicas)
    finally:
        await client.aclose()
