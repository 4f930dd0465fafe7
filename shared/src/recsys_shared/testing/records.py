"""Registry records for tests that need model versions without training any."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from recsys_shared.schemas import ModelInfo, ModelStatus


def model_info(
    version: int, status: ModelStatus = ModelStatus.CANDIDATE, **fields: Any
) -> ModelInfo:
    """The registry's record of model ``version``: an ALS model made on the ``version``-th day
    of 2024, from snapshot ``snap-<version>``, its artifact at ``file:///artifacts/v<version>``
    (nothing reads it); ``fields`` set anything else or override these."""
    values: dict[str, Any] = {
        "version": version,
        "status": status,
        "algorithm": "als",
        # Fixed, so that lists ordered by age are the same on every run.
        "created_at": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=version - 1),
        "snapshot_id": f"snap-{version}",
        "artifact_url": f"file:///artifacts/v{version}",
        **fields,
    }
    return ModelInfo(**values)
