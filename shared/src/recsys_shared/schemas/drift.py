"""The drift monitor's reports."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
)

#: A check's verdict: "insufficient_data" below DRIFT_MIN_EVENTS, "no_model" with none active.
DriftStatus = Literal["ok", "drift", "insufficient_data", "no_model"]


# ── drift monitoring ──────────────────────────────────────────────────────────────────────
class OnlineHitRate(BaseModel):
    events: int = Field(description="Events that carried a recommendation id of this version.")
    hits: int = Field(description="Of those, events on an item of that recommendation.")
    hit_rate: float | None


class DriftReport(BaseModel):
    """What the drift monitor saw in the recent window, compared with the active model's
    training data, and whether it triggered a retrain."""

    status: DriftStatus
    checked_at: datetime
    window_hours: int
    window_start: datetime
    events: int = Field(description="Events applied in the window.")
    model_version: int | None = None
    snapshot_id: str | None = None
    psi: float | None = Field(
        default=None,
        description="Population stability index of item popularity (top items "
        "plus 'other') between the training data's newest interactions and the window.",
    )
    psi_reference: int | None = Field(
        default=None,
        description="How many of the training snapshot's newest interactions the PSI "
        "compared the window with (DRIFT_REFERENCE_FACTOR times the window's events).",
    )
    psi_top_items: int | None = Field(
        default=None,
        description="Top items of each side the PSI named as bins: one per DRIFT_EVENTS_PER_BIN "
        "of the window's events, at most DRIFT_TOP_ITEMS.",
    )
    unknown_user_share: float | None = Field(
        default=None, description="Share of the window's events by users the model does not know."
    )
    unknown_item_share: float | None = Field(
        default=None, description="Share of the window's events on items the model does not know."
    )
    event_types: dict[str, float] = Field(
        default_factory=dict, description="Share of each event type in the window."
    )
    hit_rate: dict[str, OnlineHitRate] = Field(
        default_factory=dict, description="Online hit rate per serving model version."
    )
    thresholds: dict[str, float] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list, description="Thresholds crossed.")
    triggered_task_id: str | None = Field(
        default=None, description="The retraining task this check enqueued, if any."
    )
    trigger_skipped: str | None = Field(
        default=None, description="Why drift did not enqueue a retrain (cool-down, training)."
    )
    rolled_back: str | None = Field(
        default=None,
        description="A newly promoted version whose online hit rate fell below its "
        "predecessor's, rolled back by this check.",
    )


class DriftOverview(BaseModel):
    latest: DriftReport | None
    history: list[DriftReport] = Field(description="Newest first, capped.")
