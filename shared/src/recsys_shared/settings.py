"""Settings base shared by every service.

Each service subclasses :class:`ServiceSettings` once and exposes a cached ``get_settings()``
that is injected as a dependency, so tests override it instead of editing the environment.
In production, start-up fails on a secret that is missing, a development placeholder, or
shorter than :data:`MIN_SECRET_LENGTH` characters.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # Host and port as written: ``hostname`` would drop an IPv6 address's brackets.
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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
    redis_url: SecretStr = SecretStr(DEFAULT_REDIS_URL)
    ephemeral_redis_url: SecretStr | None = Field(
        default=None,
        description="A Redis for what may be lost: cached lists and served-list records, "
        "without fsync on every write. Unset: they live on REDIS_URL.",
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
        return redact_url(self.redis_dsn)

    @property
    def ephemeral_redis_dsn(self) -> str | None:
        return self.ephemeral_redis_url.get_secret_value() if self.ephemeral_redis_url else None

    def _secrets_to_check(self) -> list[Secret]:
        """Subclasses list their own secrets; production checks each with
        :func:`secret_problem`."""
        return []

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


class ServingSettings(ServiceSettings):
    """What the processes that serve lists (gateway and recommender) share."""

    recommendation_ttl_seconds: int = Field(
        # A day: the usual click-attribution window, and a seventh of the memory of a week (one
        # record, ~350 bytes, per computed list; see docs/deploy.md).
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
