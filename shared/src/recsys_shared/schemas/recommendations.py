"""Recommendation lists, the queries for them, and the records of what was served."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from recsys_shared.schemas.base import (
    DIGITS_PATTERN,
    MAX_BATCH_LISTS,
    MAX_K,
    MAX_OFFSET,
    Category,
    Identifier,
    UrlInteger,
)


# ── recommendations ───────────────────────────────────────────────────────────────────────
class Strategy(StrEnum):
    PERSONALIZED = "personalized"
    SIMILAR = "similar"
    POPULAR = "popular"
    #: By item metadata (categories, titles): a user whose events are all on items without
    #: interactions, or similar items of such an item.
    CONTENT = "content"


class FallbackReason(StrEnum):
    """Why a list is popular items rather than the model's."""

    NO_MODEL = "no_model"  # no version has been published yet
    UNKNOWN_USER = "unknown_user"  # no events of the user, and the model never saw them
    NO_KNOWN_ITEMS = "no_known_items"  # the user's items are all newer than the model
    ITEM_NOT_IN_MODEL = "item_not_in_model"  # similar items of an item the model lacks
    RECOMMENDER_UNAVAILABLE = "recommender_unavailable"  # the gateway's own fallback
    VARIANT_UNAVAILABLE = "variant_unavailable"  # the user's experiment version is not loaded


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
    fallback_reason: FallbackReason | None = Field(
        default=None, description="Why a fallback strategy answered."
    )
    recommendation_id: str = Field(description="Send back on events to measure online quality.")
    variant: str | None = Field(
        default=None,
        description="The experiment variant the user is assigned to (control, canary, "
        "treatment-1…); null outside experiments. `model_version` is the version it serves.",
    )
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
    experiment: str | None = Field(default=None, description="Served within this experiment…")
    variant: str | None = Field(default=None, description="…as this variant.")


class RecommendationQuery(BaseModel):
    """The query part of a recommendation request, shared by the gateway and the recommender.
    Frozen: a validated query is shared by the requests that send the same query string."""

    model_config = ConfigDict(frozen=True)

    k: UrlInteger = Field(default=10, ge=1, le=MAX_K, description="How many items to return")
    offset: UrlInteger = Field(
        default=0, ge=0, le=MAX_OFFSET, description="How many of the best items to skip (paging)"
    )
    exclude_seen: bool = Field(
        default=True, description="Leave out items the user already interacted with"
    )
    category: Category | None = Field(default=None, description="Only items of this category")

    def cache_fragment(self) -> str:
        return f"k{self.k}:o{self.offset}:s{int(self.exclude_seen)}:c{self.category or ''}"


class ExperimentArm(BaseModel):
    """Which experiment variant a list is asked for (internal API): the gateway assigns it,
    the recommender ranks with its pinned version and tags the list for attribution."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field(min_length=1, max_length=20, pattern=DIGITS_PATTERN)
    variant: str = Field(min_length=1, max_length=20, pattern=r"^[a-z0-9-]+$")
    model_version: int = Field(ge=1, le=2**53)
    shadow_version: int | None = Field(
        default=None,
        ge=1,
        le=2**53,
        description="Also rank the list with this version off the response path (shadow).",
    )


class UserListRequest(RecommendationQuery):
    """One user's list in a :class:`UserListBatch`."""

    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    arm: ExperimentArm | None = None


class UserListBatch(BaseModel):
    """Several users' lists asked of a recommender in one call (internal API).

    The gateway coalesces the cache misses of one event-loop turn into one batch, so that
    under load one HTTP exchange and one read of the users' contexts serve many requests.
    The answer is NDJSON: one ``Recommendations`` per line, in the order asked.
    """

    model_config = ConfigDict(extra="forbid")

    requests: list[UserListRequest] = Field(min_length=1, max_length=MAX_BATCH_LISTS)
