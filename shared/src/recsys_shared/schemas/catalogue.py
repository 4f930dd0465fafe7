"""The item catalogue: items in, items out, partial updates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

from recsys_shared.schemas.base import (
    MAX_BATCH_ITEMS,
    TEXT_PATTERN,
    Category,
    Identifier,
    InputModel,
)

# ── catalogue ─────────────────────────────────────────────────────────────────────────────
#: The one id the catalogue refuses: ``GET /v1/items/popular`` is the popular list, so an item
#: stored under it could never be read back. Events may still name it (nothing reads it back).
RESERVED_ITEM_ID: Final = "popular"


def _not_reserved(item_id: str) -> str:
    if item_id == RESERVED_ITEM_ID:
        raise ValueError(
            f"'{RESERVED_ITEM_ID}' is reserved: GET /v1/items/{RESERVED_ITEM_ID} is the popular "
            "list, so an item of that id could not be read back"
        )
    return item_id


#: An id the catalogue may store an item under.
CatalogueItemId = Annotated[
    Identifier,
    AfterValidator(_not_reserved),
    Field(json_schema_extra={"not": {"const": RESERVED_ITEM_ID}}),
]


class ItemIn(InputModel):
    title: str = Field(
        min_length=1, max_length=500, pattern=TEXT_PATTERN, examples=["Toy Story (1995)"]
    )
    categories: list[Category] = Field(default_factory=list, max_length=32)
    available: StrictBool = True


def _published_without_null(schema: dict[str, Any]) -> None:
    """A patch refuses null (a field left out keeps its value), so the document shows each
    field's own type alone: no null branch and no null default."""
    schema["minProperties"] = 1
    for name, field in schema["properties"].items():
        field.pop("default")
        (own_type,) = (branch for branch in field.pop("anyOf") if branch != {"type": "null"})
        schema["properties"][name] = own_type | field


class ItemPatch(InputModel):
    """A partial update: only the fields given change (at least one; none may be null)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra=_published_without_null
    )

    # Plain optionals, not a union with a hidden None: a wrong type is then one error naming
    # the field ("available: Input should be a valid boolean"), not one per union branch.
    title: (
        Annotated[
            str,
            Field(min_length=1, max_length=500, pattern=TEXT_PATTERN, examples=["Heat (1995)"]),
        ]
        | None
    ) = None
    categories: Annotated[list[Category], Field(max_length=32)] | None = None
    available: StrictBool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> ItemPatch:
        if not self.model_fields_set:
            raise ValueError("a patch needs at least one of title, categories, available")
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null: leave a field out to keep it")
        return self


class ItemWithId(ItemIn):
    item_id: CatalogueItemId


class ItemBatch(InputModel):
    items: list[ItemWithId] = Field(
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        description="An item listed more than once is stored once, as its last entry says.",
    )

    @model_validator(mode="after")
    def _last_entry_per_item(self) -> ItemBatch:
        # A batch's writes run concurrently, in no order between them, so two entries of one
        # item would leave either; and "stored" counts items, not entries.
        last = {item.item_id: item for item in self.items}
        if len(last) < len(self.items):
            self.items = list(last.values())
        return self


class Item(BaseModel):
    item_id: str
    title: str
    categories: list[str]
    available: bool
    updated_at: datetime


class ItemsStored(BaseModel):
    stored: int
