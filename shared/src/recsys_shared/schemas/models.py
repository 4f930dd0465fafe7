"""Model versions and training: recipes, the registry's lineage, tasks, snapshots."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
)

from recsys_shared.schemas.base import InputModel


# ── models and training ───────────────────────────────────────────────────────────────────
class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"


class TrainingStatus(StrEnum):
    """How a training run ended (a task's result, and the outcome label it is counted by)."""

    PUBLISHED = "published"
    REJECTED = "rejected"  # by the evaluation gate
    REFUSED = "refused"  # by the snapshot's data-quality checks
    UNCHANGED = "unchanged"  # no new data since the last version
    ABANDONED = "abandoned"  # delivered too often without finishing


Algorithm = Literal["als", "bpr", "item_knn", "ease", "hybrid"]
#: Recipes whose model is user and item factors (a user is a vector); the others are
#: item-item (a user is their history, scored through an item × item matrix).
FACTOR_ALGORITHMS: Final[frozenset[str]] = frozenset({"als", "bpr"})


class RecipeBase(BaseModel):
    """What every recipe decides about its data: how old and how negative evidence counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_days: float | None = Field(
        default=None,
        gt=0,
        description="An interaction's weight halves with every this many days between it and "
        "the user's latest one; null: no decay.",
    )
    negative_weight: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="How much a negative weight (a low rating) counts against an item, as a "
        "share of its magnitude; 0 ignores negative evidence (the item stays seen).",
    )


class AlsRecipe(RecipeBase):
    """implicit's ALS on confidence-weighted interactions."""

    algorithm: Literal["als"] = "als"
    factors: int = Field(default=32, ge=2, le=1024)
    regularization: float = Field(default=0.05, ge=0)
    alpha: float = Field(default=1.0, gt=0)
    iterations: int = Field(default=15, ge=1, le=500)
    confidence: Literal["none", "bm25", "tfidf"] = Field(
        default="none", description="Weighting of the user × item matrix before ALS."
    )
    bm25_k1: float = Field(default=100.0, gt=0)
    bm25_b: float = Field(default=0.8, ge=0, le=1)


class BprRecipe(RecipeBase):
    """implicit's Bayesian personalised ranking (positive interactions only)."""

    algorithm: Literal["bpr"] = "bpr"
    factors: int = Field(default=64, ge=2, le=1024)
    learning_rate: float = Field(default=0.01, gt=0)
    regularization: float = Field(default=0.01, ge=0)
    iterations: int = Field(default=100, ge=1, le=1000)


class ItemKnnRecipe(RecipeBase):
    """implicit's item-item nearest neighbours (``CosineRecommender``/``BM25Recommender``)."""

    algorithm: Literal["item_knn"] = "item_knn"
    similarity: Literal["cosine", "bm25"] = "cosine"
    neighbours: int = Field(default=100, ge=1, le=2000)


class _EaseFields(RecipeBase):
    l2: float = Field(default=300.0, gt=0)
    max_items: int = Field(
        default=2000, ge=10, le=20_000, description="The model covers the most popular N items."
    )


class EaseRecipe(_EaseFields):
    """EASE (Steck, 2019): a closed-form item-item model on the most popular items."""

    algorithm: Literal["ease"] = "ease"


class HybridRecipe(_EaseFields):
    """EASE blended with a content model (categories and title words) on every catalogued
    item, so items with few or no interactions still get scores and neighbours."""

    algorithm: Literal["hybrid"] = "hybrid"
    content_weight: float = Field(default=0.01, ge=0, le=10)
    content_neighbours: int = Field(default=50, ge=1, le=500)


Recipe = Annotated[
    AlsRecipe | BprRecipe | ItemKnnRecipe | EaseRecipe | HybridRecipe,
    Field(discriminator="algorithm"),
]


class Candidate(BaseModel):
    """One recipe tried by a search, with its metrics on the validation slice."""

    recipe: Recipe
    metrics: dict[str, float] = Field(default_factory=dict)
    seconds: float = Field(description="Fit and evaluation time.")


class Selection(BaseModel):
    """How a version's recipe was chosen: a search, a refit of the last winner, or asked."""

    mode: Literal["search", "refit", "requested"]
    reason: str = Field(description="Why this recipe was trained (for a search: why it won).")
    candidates: list[Candidate] = Field(default_factory=list, description="Best first.")
    seconds: float = Field(default=0.0, description="Time the search took.")
    validation_cut_time: float | None = None


class TrainingData(BaseModel):
    """What a version was trained on: statistics of its snapshot."""

    model_config = ConfigDict(extra="ignore")

    users: int | None = None
    items: int | None = None
    interactions: int | None = None
    time_min: float | None = Field(default=None, description="The oldest event's time (epoch s).")
    time_max: float | None = Field(default=None, description="The newest event's time (epoch s).")
    holdout_cut_time: float | None = Field(
        default=None, description="Events after this were held out to judge the version."
    )
    snapshot_created_at: float = Field(
        default=0.0,
        description="When the snapshot was taken: users updated after it have events the "
        "version has not seen (their vectors are folded in).",
    )
    item_metadata: bool = Field(default=False, description="Item categories were used.")


def metric_name(measure: Literal["precision", "recall", "ndcg", "map"], k: int) -> str:
    """A ranking metric's name at a cut-off, as evaluation writes it and readers look it up."""
    return f"{measure}_at_{k}"


class ModelInfo(BaseModel):
    """A registry entry: everything known about one model version (its lineage)."""

    version: int
    status: ModelStatus
    status_reason: str | None = None
    replaced_by: int | None = Field(
        default=None, description="For a retired version: the version activated after it."
    )
    algorithm: Algorithm
    params: dict[str, Any] = Field(
        default_factory=dict, description="The recipe's fields, flat (see ``recipe``)."
    )
    recipe: Recipe | None = Field(
        default=None, description="The recipe trained: what a refit trains again."
    )
    selection: Selection | None = None
    created_at: datetime
    activated_at: datetime | None = None
    snapshot_id: str
    data: TrainingData = Field(default_factory=TrainingData)
    evaluation_k: int | None = Field(
        default=None, description="The cut-off its metrics were measured at (EVALUATION_K)."
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline_metrics: dict[str, float] = Field(default_factory=dict)
    champion_version: int | None = Field(
        default=None, description="The active model it was compared with, on the same holdout."
    )
    champion_metrics: dict[str, float] = Field(default_factory=dict)
    artifact_url: str | None = None
    checksum: str | None = None
    code_version: str = "unknown"
    training_seconds: float | None = None
    task_id: str | None = Field(
        default=None,
        description="The Celery task that trained it: a task delivered again after its worker "
        "died finds the version it already trained instead of training another.",
    )
    experiment_notes: list[str] = Field(
        default_factory=list,
        description="What online experiments did with this version: each canary step, "
        "promotion or rollback, newest last.",
    )


class RetrainRequest(InputModel):
    algorithm: Algorithm | None = Field(
        default=None,
        description="Train this recipe kind (searching its parameters if `search`); "
        "default: the active version's recipe, or a search when it has none.",
    )
    force: StrictBool = Field(default=False, description="Train even if no new data arrived.")
    search: StrictBool | None = Field(
        default=None,
        description="Search recipes and their parameters within the training budget; default: "
        "only when the active version has no recipe (otherwise its recipe is refitted).",
    )


class TrainingOutcome(BaseModel):
    """What a training task did: the result the task stores for ``GET /v1/tasks/{id}``."""

    status: TrainingStatus
    snapshot_id: str | None = None
    version: int | None = None
    reasons: list[str] = Field(default_factory=list)
    recipe: Recipe | None = None
    selection: str | None = Field(default=None, description="search, refit or requested.")
    search_seconds: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline_metrics: dict[str, float] = Field(default_factory=dict)
    champion_metrics: dict[str, float] = Field(default_factory=dict)


class TaskAccepted(BaseModel):
    task_id: str


class TaskState(BaseModel):
    task_id: str
    state: str
    result: dict[str, Any] | None = None
    error: str | None = None


class QualityCheck(BaseModel):
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str


class QualityReport(BaseModel):
    passed: bool
    checks: list[QualityCheck]

    @property
    def failures(self) -> list[QualityCheck]:
        return [check for check in self.checks if not check.passed]


class SnapshotInfo(BaseModel):
    """A training snapshot the feature-store exported: where it is and what it holds."""

    snapshot_id: str = Field(
        description="'<ms>-<crc>.g<n>': the newest partition's first unapplied position in "
        "milliseconds, a CRC-32 of every partition's position, and the data generation (bumped "
        "by erasures and retention); the same data always gets the same id."
    )
    url: str
    created_at: datetime
    users: int
    items: int
    interactions: int
    time_min: float | None
    time_max: float | None
    quality: QualityReport


class TrafficCounts(BaseModel):
    """The pipeline's counters at one moment (they only grow): events stored, resent
    duplicates, and events refused at the door."""

    accepted: int = Field(default=0, ge=0)
    duplicates: int = Field(default=0, ge=0)
    rejected: int = Field(default=0, ge=0)

    @property
    def received(self) -> int:
        """Events that passed validation: stored, or recognised as resent."""
        return self.accepted + self.duplicates

    @property
    def total(self) -> int:
        return self.received + self.rejected

    def since(self, earlier: TrafficCounts) -> TrafficCounts | None:
        """The counts since ``earlier``; None if any went backwards (a flushed data tier)."""
        delta = {name: getattr(self, name) - getattr(earlier, name) for name in _COUNTS}
        return None if min(delta.values()) < 0 else TrafficCounts(**delta)


_COUNTS = tuple(TrafficCounts.model_fields)


class SnapshotManifest(SnapshotInfo):
    """A snapshot's manifest as stored beside its files (``write_bundle`` adds their
    checksums): its info, and the pipeline's counters when it was taken, which the next
    snapshot's reject and duplicate shares are judged against (absent in snapshots written
    before they were recorded)."""

    pipeline_counters: TrafficCounts | None = None


# ── what a recommender replica serves ─────────────────────────────────────────────────────
class ServingStatus(BaseModel):
    serving_version: int | None
    active_version: int | None
    last_error: str | None
    variant_versions: list[int] = []
    memory_bytes: int = 0


class PreparedVersion(BaseModel):
    version: int
    memory_bytes: int
