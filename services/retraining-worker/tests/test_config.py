"""Settings: Celery reliability constraints are enforced at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from retraining_worker.__main__ import main
from retraining_worker.config import Settings


# The default lock (60 s) makes a locked-out training wait 15 s before it retries.
@pytest.mark.parametrize("visibility", [60, 100, 115])
def test_visibility_timeout_must_exceed_the_task_time_limit_and_a_retry(visibility: int) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(task_time_limit_seconds=100, broker_visibility_timeout_seconds=visibility)

    message = str(caught.value)
    assert "broker_visibility_timeout_seconds" in message
    assert "task_time_limit_seconds" in message
    assert "plus the 15 s a retried training waits" in message


def test_visibility_timeout_longer_than_the_time_limit_and_a_retry_is_accepted() -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:6390/3",
        task_time_limit_seconds=100,
        broker_visibility_timeout_seconds=116,
    )

    assert settings.locked_retry_seconds == 15
    assert settings.redis_dsn == "redis://127.0.0.1:6390/3"


def test_a_short_lock_retries_sooner_and_the_transient_wait_is_the_floor() -> None:
    short = {"task_time_limit_seconds": 10, "lock_ttl_seconds": 5}
    with pytest.raises(ValidationError, match="plus the 3 s a retried training waits"):
        Settings(**short, broker_visibility_timeout_seconds=13)  # type: ignore[arg-type]

    settings = Settings(**short, broker_visibility_timeout_seconds=14)  # type: ignore[arg-type]

    assert settings.locked_retry_seconds == 1.25


def test_defaults_are_consistent() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6390/0")

    assert (
        settings.broker_visibility_timeout_seconds
        > settings.task_time_limit_seconds + settings.locked_retry_seconds
    )
    assert settings.algorithm in {"als", "bpr"}
    assert 0 < settings.holdout_fraction < 1


@pytest.mark.parametrize(
    "field", [{"holdout_fraction": 1.0}, {"holdout_fraction": 0.0}, {"factors": 1}]
)
def test_out_of_range_training_settings_are_refused(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Settings(**field)  # type: ignore[arg-type]


def test_entrypoint_refuses_an_unknown_role() -> None:
    with pytest.raises(SystemExit, match="worker\\|beat"):
        main(["scheduler"])
