"""Settings: Celery reliability constraints are enforced at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from retraining_worker.__main__ import main
from retraining_worker.config import Settings


@pytest.mark.parametrize("visibility", [100, 60])
def test_visibility_timeout_must_exceed_the_task_time_limit(visibility: int) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(task_time_limit_seconds=100, broker_visibility_timeout_seconds=visibility)

    message = str(caught.value)
    assert "broker_visibility_timeout_seconds" in message
    assert "task_time_limit_seconds" in message


def test_visibility_timeout_longer_than_the_time_limit_is_accepted() -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:6390/3",
        task_time_limit_seconds=100,
        broker_visibility_timeout_seconds=101,
    )

    assert settings.broker_visibility_timeout_seconds > settings.task_time_limit_seconds
    assert settings.redis_dsn == "redis://127.0.0.1:6390/3"


def test_defaults_are_consistent() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6390/0")

    assert settings.broker_visibility_timeout_seconds > settings.task_time_limit_seconds
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
