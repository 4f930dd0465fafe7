"""Gateway settings."""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Annotated

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_settings import NoDecode

from gateway.auth import parse_api_keys
from recsys_shared.fastpath.http_client import Origin
from recsys_shared.settings import (
    DEVELOPMENT_API_KEYS,
    FeatureStoreClientSettings,
    Secret,
    ServingSettings,
    TaskQueueSettings,
)
from recsys_shared.tasks import TASK_RECORD_TTL_SECONDS


class Settings(ServingSettings, TaskQueueSettings, FeatureStoreClientSettings):
    service_name: str = "gateway"
    api_keys: SecretStr = Field(
        default=SecretStr(DEVELOPMENT_API_KEYS),
        description="Comma-separated key:role pairs; roles are client, admin and viewer (the "
        "status page only). Production refuses keys shorter than 32 characters.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the status page's session cookies (HMAC-SHA256); at least 32 "
        "characters, required in production. Unset elsewhere: each process generates one at "
        "start-up, so sessions end when it stops and are not shared between replicas.",
    )
    session_max_age_seconds: int = Field(
        default=8 * 3600,
        ge=60,
        le=7 * 24 * 3600,
        description="How long a status-page sign-in lasts.",
    )
    recommender_urls: Annotated[list[str], NoDecode] = Field(
        default=["http://127.0.0.1:8101"], description="Comma-separated recommender replicas."
    )
    #: > 0: every address the URLs' host names resolve to is a replica (a headless Service's
    #: pods), looked up again this often (``gateway.replicas``); 0: the URLs as written.
    recommender_discovery_seconds: float = Field(default=0.0, ge=0)
    recommender_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    feature_store_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    breaker_failures: int = Field(
        default=3, ge=1, description="Failures that open a replica's breaker."
    )
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body, as sent and, for a gzip body, decompressed: a 413 "
        "past either.",
    )
    idempotency_window_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        le=30 * 86_400,
        description="How long a (user_id, event_id) is remembered: a resend within it is a "
        "duplicate. About 12-24 bytes of Redis per remembered event.",
    )
    max_stream_backlog: int = Field(
        default=1_000_000,
        ge=0,
        description="Unapplied events of one partition beyond which its ingestion answers 503.",
    )
    cache_ttl_seconds: int = Field(
        default=300, ge=1, description="How long a ranked list is reused for the same query."
    )
    task_record_ttl_seconds: int = Field(default=TASK_RECORD_TTL_SECONDS, ge=60)
    rate_limit_per_second: int = Field(
        default=1000, ge=0, description="Requests per second per API key; 0 turns the limit off."
    )
    rate_limit_sync_seconds: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="How often replicas share their counts (on the ephemeral Redis).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="Comma-separated origins browsers may call the API from."
    )
    experiment_refresh_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often a replica re-reads the running experiment: a started, stepped "
        "or ended experiment reaches every replica's assignment within it.",
    )
    experiment_check_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="How often one replica (under a lock) decides what the running "
        "experiment does next.",
    )
    experiment_tau: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="The mSPRT mixture's spread: the size of difference in the metric the "
        "test is most sensitive to (see docs/experiments.md).",
    )
    experiment_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="The chance the always-valid sequence ever excludes the true difference: "
        "the false-decision rate under continuous monitoring.",
    )
    experiment_retention_days: float = Field(
        default=180, gt=0, description="Ended experiments and their counters are kept this long."
    )
    access_log: bool = False
    docs_enabled: bool = Field(
        default=True,
        description="Serve the API documentation (/docs, /redoc, /openapi.json). The "
        "Kubernetes base and compose turn it off: a public API need not publish its map.",
    )
    _generated_session_key: bytes = PrivateAttr(default_factory=lambda: secrets.token_bytes(32))

    @property
    def session_key(self) -> bytes:
        """SESSION_SECRET, or the key this process generated when it is unset."""
        if self.session_secret is None:
            return self._generated_session_key
        return self.session_secret.get_secret_value().encode()

    @field_validator("session_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes SESSION_SECRET= when .env leaves it out: an empty HMAC key would
        # sign every session with nothing, so it means "unset" (refused in production).
        return None if value == "" else value

    @field_validator("api_keys")
    @classmethod
    def _well_formed_keys(cls, keys: SecretStr) -> SecretStr:
        parse_api_keys(keys.get_secret_value())  # raises, naming the entry's problem
        return keys

    @field_validator("recommender_urls", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(url).strip().rstrip("/") for url in value if str(url).strip()]
        return value

    @field_validator("recommender_urls")
    @classmethod
    def _plain_http_origins(cls, urls: list[str]) -> list[str]:
        # The hot-path client speaks plain HTTP/1.1 to host:port (inside the cluster, behind
        # its network policies): refuse anything else at start-up, by name.
        for url in urls:
            Origin.from_url(url)
        if not urls:
            raise ValueError("RECOMMENDER_URLS names no replica")
        return urls

    def _secrets_to_check(self) -> list[Secret]:
        keys = parse_api_keys(self.api_keys.get_secret_value())
        session = self.session_secret.get_secret_value() if self.session_secret else ""
        return [
            *(
                Secret("API_KEYS", key, f"key {index} of {len(keys)}, role {role}")
                for index, (key, role) in enumerate(keys, start=1)
            ),
            Secret("SESSION_SECRET", session),
        ]


@lru_cache
def get_settings() -> Settings:
    return Settings()
