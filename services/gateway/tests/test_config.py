"""Gateway settings refuse what the services could not work with, at start-up and by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import Settings


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
