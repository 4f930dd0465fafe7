"""Gateway settings refuse what the services could not work with, at start-up and by name."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import Settings
from recsys_shared.durability import NotDurable
from recsys_shared.processes import RedisServer


def test_recommender_urls_are_comma_separated_plain_http_origins() -> None:
    settings = Settings(recommender_urls="http://r1:8101/, http://r2:8101")

    assert settings.recommender_urls == ["http://r1:8101", "http://r2:8101"]


@pytest.mark.parametrize("urls", ["https://r1:8101", "r1:8101", "http://", ""])
def test_anything_else_is_refused_naming_it(urls: str) -> None:
    with pytest.raises(ValidationError, match="recommender_urls"):
        Settings(recommender_urls=urls)


def test_the_idempotency_window_is_read_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEMPOTENCY_WINDOW_SECONDS", "3600")
    assert Settings().idempotency_window_seconds == 3600

    for seconds in (59, 30 * 86_400 + 1):
        with pytest.raises(ValidationError, match="idempotency_window_seconds"):
            Settings(idempotency_window_seconds=seconds)


@pytest.mark.parametrize("seconds", [0, 5.5])
def test_the_rate_limit_sync_period_is_bounded(seconds: float) -> None:
    with pytest.raises(ValidationError, match="rate_limit_sync_seconds"):
        Settings(rate_limit_sync_seconds=seconds)


# ── the broker's durability at start-up ───────────────────────────────────────────────────
PRODUCTION = {
    "environment": "production",
    "api_keys": f"{'c' * 40}:client,{'a' * 40}:admin",
    "session_secret": "a-session-secret-shared-by-every-replica-0123",
}


def test_production_refuses_a_broker_of_its_own_that_could_lose_messages(
    make_gateway: Any, ephemeral_server: RedisServer
) -> None:
    with pytest.raises(NotDurable, match=r"^CELERY_BROKER_URL .*appendonly=no") as refused:
        make_gateway(celery_broker_url=ephemeral_server.url, **PRODUCTION)

    # Nothing waits for the broker's replicas: the advice is AOF alone.
    assert "DURABLE_REPLICAS" not in refused.value.detail
    assert "REDIS_DURABILITY_CHECK=warn" in refused.value.detail


def test_a_durable_broker_or_warn_starts(
    make_gateway: Any,
    broker_server: RedisServer,
    ephemeral_server: RedisServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    durable = make_gateway(celery_broker_url=broker_server.url, **PRODUCTION)
    quiet = capfd.readouterr().err
    warned = make_gateway(
        celery_broker_url=ephemeral_server.url, redis_durability_check="warn", **PRODUCTION
    )
    warning = capfd.readouterr().err  # the service's own log handler writes to stderr

    for gateway in (durable, warned):
        assert gateway.client.get("/readyz").status_code == 200
    assert "is not durable" not in quiet
    assert re.search(r"CELERY_BROKER_URL .* is not durable: .*appendonly=no", warning)
