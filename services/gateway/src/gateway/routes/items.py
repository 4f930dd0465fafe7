"""The item catalogue."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status

from gateway.auth import ClientAuth
from gateway.deps import GatewayState, StateDep
from gateway.errors import NOT_FOUND, PROBLEM_RESPONSES, problem_response_doc
from recsys_shared.errors import StoreUnavailable, UnknownItem
from recsys_shared.schemas import (
    CatalogueItemId,
    Identifier,
    Item,
    ItemBatch,
    ItemIn,
    ItemPatch,
    ItemsStored,
)
from recsys_shared.web.paths import CATALOGUE_ITEM

router = APIRouter(
    prefix="/v1/items", tags=["items"], dependencies=[ClientAuth], responses=PROBLEM_RESPONSES
)

ItemIdPath = Annotated[Identifier, Path(description="Item id")]
# Writes: not `popular`, the popular list's path (GET only), which answers them with a 405.
WrittenItemIdPath = Annotated[
    CatalogueItemId, Path(description="Item id; not `popular`, the popular list's path")
]
POPULAR_LIST: dict[int | str, dict[str, Any]] = {
    405: problem_response_doc("The path is `/v1/items/popular`, the popular list (`Allow: GET`)")
}


@router.put(
    "",
    response_model=ItemsStored,
    summary="Create or replace up to 1000 items at once (bulk import)",
    description="Up to 1000 items within the body limit (`MAX_BODY_BYTES`, 1 MiB by default): "
    "items with long titles and many categories need smaller batches, or a 413 says so.",
)
async def put_items(batch: ItemBatch, state: StateDep) -> ItemsStored:
    await state.feature_store.put_items(batch)
    await _removals_heard(state)
    return ItemsStored(stored=len(batch.items))


@router.put(
    CATALOGUE_ITEM,
    response_model=Item,
    summary="Create or replace an item",
    description="An item with `available: false` is never recommended, from the next request on. "
    "The answer is the item as stored: a 404 if it was deleted between the write and that read.",
    responses={**NOT_FOUND, **POPULAR_LIST},
)
async def put_item(item_id: WrittenItemIdPath, item: ItemIn, state: StateDep) -> Item:
    await state.feature_store.put_item(item_id, item)
    await _removals_heard(state)
    return await _catalogued(state, item_id)


@router.patch(
    CATALOGUE_ITEM,
    response_model=Item,
    summary='Change some fields of an item (e.g. {"available": false})',
    description="Only the fields given change; an unknown item is a 404.",
    responses={**NOT_FOUND, **POPULAR_LIST},
)
async def patch_item(item_id: WrittenItemIdPath, patch: ItemPatch, state: StateDep) -> Item:
    await state.feature_store.patch_item(item_id, patch)
    await _removals_heard(state)
    return await _catalogued(state, item_id)


@router.get(
    "/{item_id}",
    response_model=Item,
    summary="An item of the catalogue",
    responses=NOT_FOUND,
)
async def get_item(item_id: ItemIdPath, state: StateDep) -> Item:
    return await _catalogued(state, item_id)


@router.delete(
    CATALOGUE_ITEM,
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an item; it is never recommended again",
    responses={**NOT_FOUND, **POPULAR_LIST},
)
async def delete_item(item_id: WrittenItemIdPath, state: StateDep) -> Response:
    await state.feature_store.delete_item(item_id)
    await _removals_heard(state)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _removals_heard(state: GatewayState) -> None:
    """After a write, this replica's cached lists are checked against the removals it made at
    once (the others hear of them on the registry's channel). The write is done: a Redis
    that does not answer now leaves it to the follower, not to the client as an error."""
    with contextlib.suppress(StoreUnavailable):
        await state.reads.cache.removals.refresh()


async def _catalogued(state: GatewayState, item_id: str) -> Item:
    """The item as the catalogue holds it; after a write, a 404 means someone else deleted it
    in between."""
    item = await state.features.item(item_id)
    if item is None:
        raise UnknownItem(f"Item '{item_id}' is not in the catalogue.")
    return item
