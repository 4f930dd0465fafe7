"""Settings base shared by every service.

Each service subclasses :class:`ServiceSettings` once (through the mixins below that name
what several services share) and exposes a cached ``get_settings()`` read from the
environment; each ``create_app(settings)`` also takes them explicitly, which is what tests do.
In production, start-up fails on a secret that is missing, a development placeholder, or
shorter than :data:`MIN_SECRET_LENGTH` characters.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, NamedTuple, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys_shared.keys import Partitions
from recsys_shared.redis_url import RedisTarget, redact

#: Keys `make run` and the docs use in development. Production refuses to start with them.
DEVELOPMENT_API_KEYS = "dev-client-key:client,dev-admin-key:admin"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6390/0"
#: Where `make run` keeps cache entries and list records (a Redis without persistence); the
#: services themselves keep them on REDIS_URL unless EPHEMERAL_REDIS_URL is set.
DEFAULT_EPHEMERAL_REDIS_URL = "redis://127.0.0.1:6391/0"
#: Production refuses shorter secrets: 32 characters of ``secrets.token_urlsafe(24)`` already
#: hold 192 random bits, beyond guessing however many requests an attacker sends.
MIN_SECRET_LENGTH = 32
_PLACEHOLDERS = frozenset({"changethis", "changeme", "change-me", "secret", "password"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


#: The URL with any password replaced, safe to log.
redact_url = redact


class Secret(NamedTuple):
    """One secret a service holds: the setting it comes from and, for a setting that holds
    several (the gateway's API_KEYS), which one of them it is."""

    setting: str
    value: str
    part: str = ""


def secret_problem(secret: Secret) -> str | None:
    """Why production refuses ``secret``, naming the setting and the rule; None if it is fine."""
    where = f"Setting '{secret.setting}'" + (f" ({secret.part})" if secret.part else "")
    if not secret.value:
        return f"{where} is not set; production needs it."
    if "dev-" in secret.value or secret.value.lower() in _PLACEHOLDERS:
        return (
            f"{where} holds a development placeholder; production refuses to start with it. "
            "Set a real secret."
        )
    if len(secret.value) < MIN_SECRET_LENGTH:
        return (
            f"{where} is {len(secret.value)} characters long; production needs at least "
            f"{MIN_SECRET_LENGTH} (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )
    return None


class ServiceSettings(BaseSettings):
    """What every process needs: where Redis is, how to log, which environment it runs in."""

    # hide_input_in_errors: a refused setting's error would otherwise print every input, the
    # secrets among them, into the log of the process that failed to start.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    environment: Environment = Environment.DEVELOPMENT
    redis_url: SecretStr = Field(
        default=SecretStr(DEFAULT_REDIS_URL),
        description="The data tier: redis[s]://host:port/db, or a cluster as "
        "redis[s]+cluster://host:port[,host:port…]; ?ssl_ca_certs=/path trusts a private CA.",
    )
    ephemeral_redis_url: SecretStr | None = Field(
        default=None,
        description="A Redis for what may be lost: cached lists, served-list records and "
        "rate-limit counters, without fsync on every write. Unset: cached lists and records "
        "live on REDIS_URL, and each gateway replica limits its own traffic only.",
    )
    event_partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Event streams (each with its users' state) the data tier is split into; "
        "every service must agree. More than 1 spreads the work over a cluster's shards.",
    )
    durable_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Replicas that must have an event before the gateway answers 202 (WAIT); "
        "0 on a single node, 1 on a cluster with replicas.",
    )
    durable_replicas_timeout_ms: int = Field(
        default=200, ge=1, le=10_000, description="How long the gateway waits for them."
    )
    redis_durability_check: Literal["enforce", "warn"] = Field(
        default="enforce",
        description="In production, refuse to start when the Redis holding durable state "
        "could lose or evict acknowledged writes (enforce), or only warn.",
    )
    redis_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="A request still running after this gets a 503."
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector (e.g. http://otel-collector:4318): turns tracing on.",
    )
    log_level: str = "INFO"
    log_json: bool = True
    service_name: str = "recsys"
    artifact_url: str = Field(
        default="file://./.data/artifacts",
        description="Where snapshots and model artifacts live: file://path or s3://bucket/prefix",
    )

    @property
    def redis_dsn(self) -> str:
        return self.redis_url.get_secret_value()

    @property
    def redis_dsn_redacted(self) -> str:
        return redact(self.redis_dsn)

    @property
    def partitions(self) -> Partitions:
        return Partitions(self.event_partitions)

    @property
    def ephemeral_redis_dsn(self) -> str | None:
        return self.ephemeral_redis_url.get_secret_value() if self.ephemeral_redis_url else None

    def _secrets_to_check(self) -> list[Secret]:
        """Subclasses list their own secrets; production checks each with
        :func:`secret_problem`."""
        return []

    @model_validator(mode="after")
    def _redis_urls_parse(self) -> Self:
        RedisTarget.from_url(self.redis_dsn)  # a bad URL fails start-up, by name
        ephemeral = self.ephemeral_redis_dsn
        if ephemeral is not None and RedisTarget.from_url(ephemeral).cluster:
            raise ValueError("EPHEMERAL_REDIS_URL must name a single Redis, not a cluster.")
        return self

    @model_validator(mode="after")
    def _enforce_non_default_secrets(self) -> Self:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems = [
            problem
            for secret in self._secrets_to_check()
            if (problem := secret_problem(secret)) is not None
        ]
        if problems:
            raise ValueError(" ".join(problems))
        return self


class TaskQueueSettings(ServiceSettings):
    """What the processes that send Celery tasks (the gateway) and run them (the worker) must
    agree on. Only they reach the broker: the recommender and the feature-store start on a
    cluster's ``REDIS_URL`` without one."""

    celery_broker_url: SecretStr | None = Field(
        default=None,
        description="A single Redis for Celery's queues and results, RedBeat and task "
        "records (kombu has no cluster support). Unset: REDIS_URL, when that is one node.",
    )
    broker_visibility_timeout_seconds: int = Field(
        default=4000,
        ge=10,
        description="Must exceed the worker's hard time limit, or Redis redelivers a task that "
        "is still running.",
    )

    @property
    def broker_dsn(self) -> str:
        """Where Celery, RedBeat and the task records live."""
        if self.celery_broker_url is not None:
            return self.celery_broker_url.get_secret_value()
        return self.redis_dsn

    @model_validator(mode="after")
    def _broker_is_one_redis(self) -> Self:
        if self.celery_broker_url is not None:
            if RedisTarget.from_url(self.broker_dsn).cluster:
                raise ValueError("CELERY_BROKER_URL must name a single Redis, not a cluster.")
        elif RedisTarget.from_url(self.redis_dsn).cluster:
            raise ValueError(
                "REDIS_URL names a cluster: set CELERY_BROKER_URL to a single Redis for Celery "
                "(kombu has no cluster support)."
            )
        return self


class FeatureStoreClientSettings(ServiceSettings):
    """Where the processes that call the feature-store's HTTP API (the gateway, the worker)
    find it."""

    feature_store_url: str = "http://127.0.0.1:8201"


class ServingSettings(ServiceSettings):
    """What the processes that serve lists (gateway and recommender) share."""

    fast_lane: bool = Field(
        default=True,
        description="Serve the hot read routes past FastAPI's router (recsys_shared.fastpath; "
        "identical answers, measured faster). false: every route goes through FastAPI.",
    )
    model_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the active model version is read, a fallback for missed "
        "announcements (recommenders load it, gateways check cached lists against it).",
    )
    recommendation_ttl_seconds: int = Field(
        # A day: the usual click-attribution window, and a seventh of the memory of a week (one
        # record, 424 bytes at k=10, per computed list; see docs/deploy.md).
        default=24 * 3600,
        ge=60,
        description="How long a served list is kept to attribute later events to it.",
    )
    ephemeral_writes_max_memory_ratio: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of Redis maxmemory from which cache entries and list records are "
        "not written, keeping the rest for events and features.",
    )
