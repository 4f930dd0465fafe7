"""The item catalogue: items in, items out, partial updates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from recsys_shared.schemas.base import (
    MAX_BATCH_ITEMS,
    TEXT_PATTERN,
    Category,
    Identifier,
    InputModel,
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
