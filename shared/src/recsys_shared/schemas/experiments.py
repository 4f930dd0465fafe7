"""Online experiments between model versions: what an admin asks for, what is stored, what the
API reports."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from recsys_shared.schemas.base import TEXT_PATTERN, InputModel, Integer, Share

#: A canary's traffic share steps up through these (from the share it starts at).
CANARY_SCHEDULE: Final = (0.05, 0.25, 0.5, 1.0)
DEFAULT_CANARY_START: Final = 0.05
MAX_VARIANTS: Final = 5
#: No verdict on fewer trials of the metric than this per variant: the large-sample variances
#: the always-valid sequence plugs in are not trustworthy below it.
MIN_TRIALS: Final = 30


class ExperimentMode(StrEnum):
    #: Fixed traffic shares, sticky per user; decided when a treatment is significantly
    #: better (promoted) or every treatment significantly worse (rolled back).
    AB = "ab"
    #: A challenger's share steps up the schedule while it is not significantly worse;
    #: promoted at the end, rolled back as soon as it is significantly worse.
    CANARY = "canary"
    #: The challenger ranks a share of requests off the response path; never served.
    SHADOW = "shadow"


class ExperimentMetric(StrEnum):
    HIT_RATE = "hit_rate"  # clicks ÷ events carrying one of the variant's list ids
    CTR = "ctr"  # clicks ÷ lists served
    CONVERSION = "conversion"  # purchases on a listed item ÷ lists served


class Decision(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"
    INCONCLUSIVE = "inconclusive"


class VariantIn(InputModel):
    model_version: Integer = Field(ge=1, le=2**53, description="The version this variant serves.")
    weight: Share | None = Field(
        default=None,
        description="ab: its traffic share (all shares sum to 1). canary: for the second "
        "variant, where its schedule starts (default 0.05). shadow: for the second variant, "
        "the share of requests it ranks off the response path. Ignored on the control.",
    )


class ExperimentIn(InputModel):
    """``POST /v1/experiments``. The first variant is the control."""

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=TEXT_PATTERN)]
    mode: ExperimentMode
    variants: list[VariantIn] = Field(
        min_length=2,
        max_length=MAX_VARIANTS,
        description="The first is the control; each serves a different model_version. ab: "
        "every weight above 0, summing to 1. canary and shadow: exactly two variants, the "
        "second's weight above 0 and below 1 (shadow: up to 1) or left out.",
    )
    metric: ExperimentMetric = ExperimentMetric.CTR
    min_exposures: Integer = Field(
        default=500,
        ge=10,
        le=10_000_000,
        description="Lists each variant must serve (at each canary step) before a decision.",
    )
    max_duration_seconds: Integer = Field(
        default=7 * 86_400,
        ge=60,
        le=90 * 86_400,
        description="Without a decision by then, the experiment ends inconclusive.",
    )

    @field_validator("variants")
    @classmethod
    def _weights_fit_the_mode(
        cls, variants: list[VariantIn], info: ValidationInfo
    ) -> list[VariantIn]:
        """Raised here, the errors name the field ``variants`` (``mode`` is validated first)."""
        versions = [variant.model_version for variant in variants]
        if len(set(versions)) != len(versions):
            raise ValueError("each variant must serve a different model_version")
        mode = info.data.get("mode")
        if mode is None:
            return variants  # the mode's own error says what is wrong
        if mode is ExperimentMode.AB:
            weights = [variant.weight for variant in variants]
            if any(weight is None or weight <= 0 for weight in weights):
                raise ValueError("in ab every variant needs a weight above 0")
            if abs(sum(weight or 0.0 for weight in weights) - 1.0) > 1e-6:
                raise ValueError("in ab the weights must sum to 1")
            return variants
        if len(variants) != 2:
            raise ValueError(f"{mode.value} compares exactly two variants")
        weight = variants[1].weight
        if weight is None or 0 < weight < 1 or (mode is ExperimentMode.SHADOW and weight == 1):
            return variants
        upper = "1 (shadow: up to 1)" if mode is ExperimentMode.SHADOW else "1"
        raise ValueError(f"the second variant's weight must be above 0 and below {upper}")

    def shares(self) -> list[float]:
        """Each variant's traffic share at the start (shadow: the control serves every list)."""
        if self.mode is ExperimentMode.AB:
            return [variant.weight or 0.0 for variant in self.variants]
        second = self.variants[1].weight
        if self.mode is ExperimentMode.CANARY:
            start = second if second is not None else DEFAULT_CANARY_START
            return [1.0 - start, start]
        return [1.0, second if second is not None else 0.1]


class ExperimentStep(BaseModel):
    """Something the experiment did: started, moved a share, decided."""

    at: datetime
    shares: list[float]
    note: str


class ExperimentState(BaseModel):
    """What changes while an experiment runs (stored beside its definition)."""

    decision: Decision = Decision.RUNNING
    reason: str = ""
    shares: list[float]
    #: Exposures of each variant when the current canary step began.
    step_started_exposures: list[int] = Field(default_factory=list)
    #: A canary's metric counts, variant → (successes, trials), when each step after the
    #: first began: the canary is compared with the control within each step.
    step_counts: list[dict[str, tuple[int, int]]] = Field(default_factory=list)
    steps: list[ExperimentStep] = Field(default_factory=list)
    ended_at: datetime | None = None


class StoredExperiment(BaseModel):
    """An experiment as Redis keeps it: its id, creation time, definition and state."""

    id: str
    created_at: datetime
    definition: ExperimentIn
    state: ExperimentState


class Interval(BaseModel):
    low: float
    high: float


class VariantReport(BaseModel):
    name: str = Field(description="control, treatment-1…, canary or shadow.")
    model_version: int
    share: float = Field(description="Its traffic share now (shadow: of rankings).")
    exposures: int = Field(description="Lists served (cached ones included).")
    events: int = Field(description="Events carrying one of its lists' recommendation_id.")
    clicks: int = Field(description="Of those, events on an item of that list.")
    conversions: int = Field(description="Of those, purchases.")
    rate: float | None = Field(description="The experiment's metric.")
    interval: Interval | None = Field(
        description="95% interval of the rate (Wilson's, on the effective number of trials: "
        "fewer than the lists when users' lists go together)."
    )
    difference: float | None = Field(
        default=None, description="Rate minus the control's (null for the control)."
    )
    difference_interval: Interval | None = Field(
        default=None,
        description="Always-valid confidence sequence of the difference at 1 - "
        "EXPERIMENT_ALPHA / (number of treatments), 95% by default with one: it may be "
        "checked at any time, as often as wanted (mixture SPRT).",
    )
    verdict: str = Field(
        default="",
        description="better, worse or undecided against the control: undecided while either "
        f"side has fewer than {MIN_TRIALS} trials of the metric.",
    )


class ShadowReport(BaseModel):
    model_version: int = Field(description="The version ranking off the response path.")
    share: float = Field(description="The share of requests (cache misses) it ranks.")
    rankings: int = Field(description="Requests the shadow ranked off the response path.")
    overlap: float | None = Field(
        description="Mean share of the served list's items the shadow's list also had."
    )
    events: int = Field(description="Events on served lists the shadow ranked too.")
    hits: int = Field(description="Of those, on an item of the shadow's list.")
    hit_rate: float | None


class Experiment(BaseModel):
    """An experiment as the API reports it."""

    id: str
    name: str
    mode: ExperimentMode
    metric: ExperimentMetric
    decision: Decision
    reason: str
    min_exposures: int
    max_duration_seconds: int
    created_at: datetime
    ended_at: datetime | None
    variants: list[VariantReport]
    shadow: ShadowReport | None = None
    steps: list[ExperimentStep]
