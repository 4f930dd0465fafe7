"""Settings: secrets never reach logs, and production refuses missing, placeholder and short
secrets, naming the setting and the rule."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from recsys_shared.settings import (
    DEVELOPMENT_API_KEYS,
    MIN_SECRET_LENGTH,
    Environment,
    Secret,
    ServiceSettings,
    TaskQueueSettings,
    redact_url,
)

STRONG = "Yx3NfQ0w9kPz2LmC8vRt5JhA1sDe7GuB"  # 32 characters


class KeyedSettings(ServiceSettings):
    """A service with one secret of its own, as the gateway has its API keys."""

    api_keys: str = DEVELOPMENT_API_KEYS

    def _secrets_to_check(self) -> list[Secret]:
        return [Secret("api_keys", self.api_keys)]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENVIRONMENT", "API_KEYS", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@cache.internal:6379/0", "redis://:***@cache.internal:6379/0"),
        ("redis://admin:s3cret@cache.internal/2", "redis://admin:***@cache.internal/2"),
        (
            "rediss://default:s3cret@10.0.0.5:6380/0?ssl_cert_reqs=none",
            "rediss://default:***@10.0.0.5:6380/0?ssl_cert_reqs=none",
        ),
        ("redis://:s3cret@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url: str, expected: str) -> None:
    redacted = redact_url(url)

    assert redacted == expected
    assert "s3cret" not in redacted
    original, cleaned = urlsplit(url), urlsplit(redacted)
    assert (cleaned.hostname, cleaned.port, cleaned.path) == (
        original.hostname,
        original.port,
        original.path,
    )


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6390/0", "redis://user@cache:6379/0", "unix:///tmp/redis.sock"]
)
def test_redact_url_leaves_urls_without_password_alone(url: str) -> None:
    assert redact_url(url) == url


def test_settings_keep_the_dsn_secret_and_expose_a_redacted_one() -> None:
    settings = ServiceSettings(_env_file=None, redis_url="redis://:hunter2@cache:6379/1")

    assert settings.redis_dsn == "redis://:hunter2@cache:6379/1"
    assert settings.redis_dsn_redacted == "redis://:***@cache:6379/1"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_production_refuses_a_development_secret() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        KeyedSettings(_env_file=None, environment=Environment.PRODUCTION)


@pytest.mark.parametrize(
    "placeholder",
    ["changeme", "ChangeMe", "changethis", "key-dev-1:client", f"dev-{STRONG}", "password"],
)
def test_production_refuses_every_placeholder(placeholder: str) -> None:
    with pytest.raises(ValidationError, match="'api_keys' holds a development placeholder"):
        KeyedSettings(_env_file=None, environment="production", api_keys=placeholder)


def test_production_refuses_a_missing_secret() -> None:
    with pytest.raises(ValidationError, match="'api_keys' is not set; production needs it"):
        KeyedSettings(_env_file=None, environment="production", api_keys="")


@pytest.mark.parametrize("length", [1, 16, MIN_SECRET_LENGTH - 1])
def test_production_refuses_a_short_secret_naming_the_rule(length: int) -> None:
    with pytest.raises(ValidationError) as raised:
        KeyedSettings(_env_file=None, environment="production", api_keys=STRONG[:length])

    message = str(raised.value)
    assert f"Setting 'api_keys' is {length} characters long" in message
    assert f"production needs at least {MIN_SECRET_LENGTH}" in message
    # The refused value is not echoed back (pydantic would show every input in the error).
    assert "input_value" not in message
    if length > 1:
        assert STRONG[:length] not in message


def test_every_refused_secret_is_named_at_once() -> None:
    class TwoSecrets(ServiceSettings):
        def _secrets_to_check(self) -> list[Secret]:
            return [Secret("FIRST", "short", "entry 1"), Secret("SECOND", "")]

    with pytest.raises(ValidationError) as raised:
        TwoSecrets(_env_file=None, environment="production")

    message = str(raised.value)
    assert "Setting 'FIRST' (entry 1) is 5 characters long" in message
    assert "Setting 'SECOND' is not set" in message


def test_production_refuses_a_placeholder_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")

    with pytest.raises(ValidationError, match="api_keys"):
        KeyedSettings(_env_file=None)

    monkeypatch.setenv("API_KEYS", f"{STRONG}-from-vault")
    assert KeyedSettings(_env_file=None).environment is Environment.PRODUCTION


@pytest.mark.parametrize("environment", [Environment.DEVELOPMENT, Environment.TEST])
def test_development_and_test_accept_the_placeholder(environment: Environment) -> None:
    settings = KeyedSettings(_env_file=None, environment=environment)

    assert settings.api_keys == DEVELOPMENT_API_KEYS
    assert settings.environment is environment


def test_production_builds_with_a_real_secret() -> None:
    settings = KeyedSettings(_env_file=None, environment="production", api_keys=STRONG)

    assert settings.environment is Environment.PRODUCTION


def test_redis_timeout_must_be_positive_and_bounded() -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(_env_file=None, redis_timeout_seconds=0)
    with pytest.raises(ValidationError):
        ServiceSettings(_env_file=None, redis_timeout_seconds=31)


CLUSTER = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"


def test_only_the_task_queue_needs_a_broker_beside_a_cluster() -> None:
    # The recommender and the feature-store never reach the broker: a cluster is enough.
    assert ServiceSettings(redis_url=CLUSTER).redis_dsn == CLUSTER
    with pytest.raises(ValidationError, match="set CELERY_BROKER_URL to a single Redis"):
        TaskQueueSettings(redis_url=CLUSTER)
    broker = "redis://10.0.0.3:6379/0"
    queue = TaskQueueSettings(redis_url=CLUSTER, celery_broker_url=broker)
    assert queue.broker_dsn == broker


@pytest.mark.parametrize(
    ("field", "setting"),
    [("celery_broker_url", "CELERY_BROKER_URL"), ("ephemeral_redis_url", "EPHEMERAL_REDIS_URL")],
)
def test_the_broker_and_the_ephemeral_redis_are_single_nodes(field: str, setting: str) -> None:
    with pytest.raises(ValidationError, match=f"{setting} must name a single Redis"):
        TaskQueueSettings(**{field: CLUSTER})
