"""Catalogue writes. Reads go through the shared FeatureReader, straight from Redis."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from feature_store.deps import StateDep
from recsys_shared.errors import UnknownItem
from recsys_shared.schemas import (
    CatalogueItemId,
    ItemBatch,
    ItemIn,
    ItemPatch,
    ItemsStored,
    ItemWithId,
)

router = APIRouter(prefix="/items", tags=["items"])

ItemIdPath = Annotated[CatalogueItemId, Path(description="Item id; not `popular`")]


@router.put("", response_model=ItemsStored, summary="Create or replace many items at once")
async def put_items(batch: ItemBatch, state: StateDep) -> ItemsStored:
    await state.catalogue.upsert(batch.items)
    return ItemsStored(stored=len(batch.items))


@router.put("/{item_id}", response_model=ItemsStored, summary="Create or replace one item")
async def put_item(item_id: ItemIdPath, item: ItemIn, state: StateDep) -> ItemsStored:
    await state.catalogue.upsert([ItemWithId(item_id=item_id, **item.model_dump())])
    return ItemsStored(stored=1)


@router.patch("/{item_id}", response_model=ItemsStored, summary="Change some fields of an item")
async def patch_item(item_id: ItemIdPath, patch: ItemPatch, state: StateDep) -> ItemsStored:
    if not await state.catalogue.patch(item_id, patch):
        raise UnknownItem(f"Item '{item_id}' is not in the catalogue.")
    return ItemsStored(stored=1)


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an item")
async def delete_item(item_id: ItemIdPath, state: StateDep) -> Response:
    if not await state.catalogue.delete(item_id):
        raise UnknownItem(f"Item '{item_id}' is not in the catalogue.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
