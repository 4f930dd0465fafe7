"""Wire models: the public API, the inter-service calls and what goes through Redis.

Inputs forbid unknown fields. Inter-service responses are parsed with these same models on the
receiving side, never trusted raw.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

MAX_ID_LENGTH: Final = 128
MAX_BATCH_EVENTS: Final = 1000
MAX_BATCH_ITEMS: Final = 1000
MAX_K: Final = 100
MAX_OFFSET: Final = 1000
#: Users' lists the gateway asks a recommender for in one call (see UserListBatch).
MAX_BATCH_LISTS: Final = 64
#: How far in the future a client's clock may be before its timestamps are refused.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
#: Timestamps before this are treated as broken clocks (the epoch, zero values).
EARLIEST_TIMESTAMP: Final = datetime(1990, 1, 1, tzinfo=UTC)


#: An id: no whitespace, no control characters, no "/" (it must fit in one URL path segment).
#: One pattern is both the rule the services enforce (pydantic's Rust regex) and the one the
#: OpenAPI document publishes, so a client's validator and ours always agree.
ID_PATTERN: Final = r"^[^\s/\x00-\x1f\x7f-\x9f]+$"
#: Free text (titles): anything but control characters.
TEXT_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]+$"

Identifier = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, examples=["42"])
]
#: A category: any text without control characters or surrounding whitespace, as real
#: catalogues name them ("Science Fiction", "Home & Garden", "(no genres listed)").
CATEGORY_PATTERN: Final = (
    r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
)
Category = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=CATEGORY_PATTERN, examples=["Science Fiction"]),
]


def _not_a_boolean(value: Any) -> Any:
    # JSON true/false would otherwise be read as 1.0/0.0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_a_boolean)]


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    LIKE = "like"
    RATING = "rating"


#: Confidence each kind of interaction adds to a user-item pair (ratings use RATING_NEUTRAL).
EVENT_WEIGHTS: Final[dict[EventType, float]] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_CART: 3.0,
    EventType.LIKE: 4.0,
    EventType.PURCHASE: 5.0,
}
#: A rating above this says "more of this", below it "not for me": a rating's weight is its
#: distance from this point, so a low rating is negative evidence (still seen, never dropped).
RATING_NEUTRAL: Final = 2.5
#: Cap on one user-item weight so that a bot clicking one item all day cannot dominate training.
MAX_WEIGHT: Final = 20.0


def event_weight(event_type: EventType, value: float | None) -> float:
    """Signed confidence that the user likes the item, as the feature-store stores it.

    Positive for every interaction but a low rating; a rating below ``RATING_NEUTRAL`` is
    negative (the further below, the more), exactly neutral is 0. How much a negative weight
    counts is each recipe's choice (its ``negative_weight``), tuned at the gate.
    """
    if event_type is EventType.RATING:
        if value is None:  # validation refuses it; a stored one says nothing either way
            return 0.0
        return min(max(value - RATING_NEUTRAL, -MAX_WEIGHT), MAX_WEIGHT)
    return EVENT_WEIGHTS[event_type]


def _rfc3339_only(value: Any) -> Any:
    # Pydantic would also take numbers as Unix times; the contract says RFC 3339 text.
    # A string of digits too: Pydantic reads "1714564800" as a Unix time.
    if not isinstance(value, str | datetime) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2024-05-01T12:00:00Z")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sane_timestamp(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a UTC offset (RFC 3339), e.g. 2024-05-01T12:00:00Z")
    if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError(f"is in the future beyond the allowed clock skew of {MAX_CLOCK_SKEW}")
    if value < EARLIEST_TIMESTAMP:
        raise ValueError(f"is before {EARLIEST_TIMESTAMP.date()}, which no real event is")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_only), AfterValidator(_sane_timestamp)]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EventIn(InputModel):
    """One interaction as a client sends it."""

    # The cross-field rule, published in the schema too: a rating carries a numeric value.
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "if": {"properties": {"type": {"const": "rating"}}, "required": ["type"]},
            "then": {"required": ["value"], "properties": {"value": {"type": "number"}}},
        },
    )

    event_id: Identifier | None = Field(
        default=None, description="Makes resubmission idempotent; assigned when absent."
    )
    user_id: Identifier
    item_id: Identifier
    type: EventType
    value: Number | None = Field(default=None, description="Finite; required for `rating`.")
    timestamp: Timestamp | None = Field(default=None, description="RFC 3339; defaults to now.")
    recommendation_id: Identifier | None = Field(
        default=None, description="The recommendation this interaction came from, if any."
    )

    @model_validator(mode="after")
    def _rating_needs_value(self) -> EventIn:
        if self.type is EventType.RATING and self.value is None:
            raise ValueError("a 'rating' event needs a 'value'")
        return self


class EventBatch(InputModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events newly stored in the stream.")
    duplicates: int = Field(description="Events whose event_id was already stored; not re-applied.")


class StoredEvent(BaseModel):
    """An event as it sits in the Redis stream: normalised, with an id and a time."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    type: EventType
    value: float | None = None
    ts: float = Field(description="Event time, seconds since the Unix epoch.")
    recommendation_id: Identifier | None = None
    received_at: float

    @property
    def weight(self) -> float:
        return event_weight(self.type, self.value)

    @classmethod
    def from_input(cls, event: EventIn, *, event_id: str, now: datetime) -> StoredEvent:
        moment = event.timestamp or now
        # Every field comes from an EventIn that was validated a moment ago (the event id too:
        # the client's, checked as an Identifier, or a uuid): no second validation pass.
        return cls.model_construct(
            event_id=event_id,
            user_id=event.user_id,
            item_id=event.item_id,
            type=event.type,
            value=event.value,
            ts=moment.timestamp(),
            recommendation_id=event.recommendation_id,
            received_at=now.timestamp(),
        )


# ── catalogue ─────────────────────────────────────────────────────────────────────────────
class ItemIn(InputModel):
    title: str = Field(
        min_length=1, max_length=500, pattern=TEXT_PATTERN, examples=["Toy Story (1995)"]
    )
    categories: list[Category] = Field(default_factory=list, max_length=32)
    available: StrictBool = True


class ItemPatch(InputModel):
    """A partial update: only the fields given change (at least one; none may be null)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra={"minProperties": 1}
    )

    title: (
        Annotated[
            str,
            Field(min_length=1, max_length=500, pattern=TEXT_PATTERN, examples=["Heat (1995)"]),
        ]
        | SkipJsonSchema[None]
    ) = None
    categories: Annotated[list[Category], Field(max_length=32)] | SkipJsonSchema[None] = None
    available: StrictBool | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _changes_something(self) -> ItemPatch:
        if not self.model_fields_set:
            raise ValueError("a patch needs at least one of title, categories, available")
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null: leave a field out to keep it")
        return self


class ItemWithId(ItemIn):
    item_id: Identifier


class ItemBatch(InputModel):
    items: list[ItemWithId] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class Item(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    available: bool
    updated_at: datetime


class ItemsStored(BaseModel):
    stored: int


# ── recommendations ───────────────────────────────────────────────────────────────────────
class Strategy(StrEnum):
    PERSONALIZED = "personalized"
    SIMILAR = "similar"
    POPULAR = "popular"
    #: By item metadata (categories, titles): a user whose events are all on items without
    #: interactions, or similar items of such an item.
    CONTENT = "content"


class ScoredItem(BaseModel):
    # Unknown fields are refused: the gateway forwards a recommender's list as the JSON it
    # validated, so nothing unchecked may ride along.
    model_config = ConfigDict(extra="forbid")

    item_id: str
    score: float
    title: str | None = None
    categories: list[str] | None = None
    exploration: Literal[True] | None = Field(
        default=None,
        description="Present (true) on an item placed in an exploration slot: a catalogued "
        "item nobody has interacted with yet, chosen by content; absent otherwise.",
    )


class Recommendations(BaseModel):
    """A list of items with its provenance, as the public API returns it."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = None
    item_id: str | None = None
    items: list[ScoredItem]
    model_version: int | None = Field(description="The model that ranked these; null for popular.")
    strategy: Strategy
    fallback_reason: str | None = Field(
        default=None, description="Why a fallback strategy answered, e.g. unknown_user."
    )
    recommendation_id: str = Field(description="Send back on events to measure online quality.")
    cached: bool = False
    cache_age_seconds: float | None = Field(
        default=None, description="How old the cached entry is; null when freshly computed."
    )


class ServedList(BaseModel):
    """What was served, recorded under its ``recommendation_id`` (the ephemeral Redis, for
    ``RECOMMENDATION_TTL_SECONDS``), so that later events carrying the id are attributed to the
    version that ranked it. Read by the feature-store's applier."""

    user_id: str | None = None
    item_id: str | None = None
    items: list[str]
    model_version: int | None = None
    strategy: Strategy
    served_at: float


class RecommendationQuery(BaseModel):
    """The query part of a recommendation request, shared by the gateway and the recommender."""

    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to return")
    offset: int = Field(
        default=0, ge=0, le=MAX_OFFSET, description="How many of the best items to skip (paging)"
    )
    exclude_seen: bool = Field(
        default=True, description="Leave out items the user already interacted with"
    )
    category: Category | None = Field(default=None, description="Only items of this category")

    def cache_fragment(self) -> str:
        return f"k{self.k}:o{self.offset}:s{int(self.exclude_seen)}:c{self.category or ''}"


class UserListRequest(RecommendationQuery):
    """One user's list in a :class:`UserListBatch`."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier


class UserListBatch(BaseModel):
    """Several users' lists asked of a recommender in one call (internal API).

    The gateway coalesces the cache misses of one event-loop turn into one batch, so that
    under load one HTTP exchange and one read of the users' contexts serve many requests.
    The answer is NDJSON: one ``Recommendations`` per line, in the order asked.
    """

    model_config = ConfigDict(extra="forbid")

    requests: list[UserListRequest] = Field(min_length=1, max_length=MAX_BATCH_LISTS)


# ── models and training ───────────────────────────────────────────────────────────────────
class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"


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
    data: dict[str, Any] = Field(default_factory=dict, description="Statistics of the snapshot.")
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


class RetrainRequest(InputModel):
    algorithm: Algorithm | None = Field(
        default=None,
        description="Train this recipe kind (searching its parameters if `search`); "
        "default: the last winner's recipe, or a search when there is none.",
    )
    force: StrictBool = Field(default=False, description="Train even if no new data arrived.")
    search: StrictBool | None = Field(
        default=None,
        description="Search recipes and their parameters within the training budget; default: "
        "only when no version has a winning recipe yet (otherwise the last winner is refitted).",
    )


class TrainingOutcome(BaseModel):
    """What a training task did: the result the task stores for ``GET /v1/tasks/{id}``."""

    status: Literal["published", "rejected", "refused", "unchanged", "abandoned"]
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
        description="The first stream id not yet applied when it was taken (everything before it "
        "is included), and the data generation, bumped by user erasures: '<stream id>.g<n>'."
    )
    url: str
    created_at: datetime
    users: int
    items: int
    interactions: int
    time_min: float | None
    time_max: float | None
    quality: QualityReport


# ── dead letters ──────────────────────────────────────────────────────────────────────────
class DeadLetterEntry(BaseModel):
    """A stream entry the feature-store could not apply, kept to be inspected and replayed."""

    id: str = Field(description="The dead letter's own id, in its partition.")
    partition: int
    stream_id: str = Field(description="Where the entry was in the events stream.")
    reason: str = Field(description="Why it could not be applied, e.g. invalid_event.")
    detail: str = ""
    entry: str = Field(description="The stream entry as it was (the stored event's JSON).")


class DeadLetters(BaseModel):
    total: int = Field(description="Dead letters kept, over every partition.")
    by_reason: dict[str, int]
    entries: list[DeadLetterEntry] = Field(description="Newest first, up to the limit asked.")


class ReplayRequest(InputModel):
    reason: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Replay only the dead letters with this reason."
    )
    limit: int = Field(default=1000, ge=1, le=100_000, description="At most this many.")


class ReplayResult(BaseModel):
    replayed: int = Field(description="Dead letters put back into the events streams.")
    skipped: int = Field(description="Dead letters left: no event in them to replay.")


# ── drift monitoring ──────────────────────────────────────────────────────────────────────
class OnlineHitRate(BaseModel):
    events: int = Field(description="Events that carried a recommendation id of this version.")
    hits: int = Field(description="Of those, events on an item of that recommendation.")
    hit_rate: float | None


class DriftReport(BaseModel):
    """What the drift monitor saw in the recent window, compared with the active model's
    training data, and whether it triggered a retrain."""

    status: Literal["ok", "drift", "insufficient_data", "no_model"]
    checked_at: datetime
    window_hours: int
    window_start: datetime
    events: int = Field(description="Events applied in the window.")
    model_version: int | None = None
    snapshot_id: str | None = None
    psi: float | None = Field(
        default=None,
        description="Population stability index of item popularity (top items "
        "plus 'other') between the training data and the window.",
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


# ── errors and health ─────────────────────────────────────────────────────────────────────
class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] = Field(default_factory=list)
    request_id: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
