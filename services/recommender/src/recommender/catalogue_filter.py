"""Which model rows a list may hold: not deleted or unavailable items, and a category's rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recommender.model_store import Indexes, LoadedModel
from recsys_shared.features import FeatureReader


@dataclass
class _CatalogueRows:
    """One version's view of the catalogue at one catalogue version."""

    catalogue_version: int
    unavailable: Indexes
    #: Only categories the catalogue holds, at most MAX_CATEGORIES: see ``category``.
    categories: dict[str, Indexes] = field(default_factory=dict)


class CatalogueFilter:
    """Model rows that must not be recommended (deleted, unavailable) and rows per category.

    Cached per model version (the active one and an experiment's variants) and catalogue
    version: one Redis read per version after each catalogue change, none otherwise, so
    availability changes apply to the very next request.
    """

    #: Versions whose rows are kept (the active one and an experiment's at most).
    MAX_VERSIONS = 8
    #: Categories whose rows are kept per version. Any client may create categories (an item
    #: holds up to 32), so the catalogue's own count is no bound: past this many the oldest
    #: kept goes (checked on a miss only; a hit costs nothing more). At most MAX_VERSIONS x
    #: MAX_CATEGORIES entries, each a sorted array of the category's model rows.
    MAX_CATEGORIES = 4096

    def __init__(self, reader: FeatureReader) -> None:
        self.reader = reader
        self._rows: dict[int, _CatalogueRows] = {}

    async def _sync(self, model: LoadedModel, catalogue_version: int) -> _CatalogueRows:
        rows = self._rows.get(model.version)
        if rows is not None and rows.catalogue_version == catalogue_version:
            return rows
        unavailable = await self.reader.unavailable_items()
        found, _ = model.items.lookup(sorted(unavailable))
        if len(self._rows) >= self.MAX_VERSIONS:
            self._rows.clear()
        self._rows[model.version] = rows = _CatalogueRows(catalogue_version, found)
        return rows

    async def unavailable(self, model: LoadedModel, catalogue_version: int) -> Indexes:
        return (await self._sync(model, catalogue_version)).unavailable

    async def category(self, model: LoadedModel, catalogue_version: int, category: str) -> Indexes:
        categories = (await self._sync(model, catalogue_version)).categories
        rows = categories.get(category)
        if rows is not None:
            return rows
        members = await self.reader.category_items(category)
        if not members:
            # Any client may ask any text: an unknown category is answered (no candidates)
            # but not kept, so asking for junk neither grows nor churns what is kept.
            return np.empty(0, dtype=np.int64)
        if len(categories) >= self.MAX_CATEGORIES:
            del categories[next(iter(categories))]  # the oldest kept: dicts keep insert order
        rows, _ = model.items.lookup(sorted(members))
        categories[category] = rows = np.sort(rows)
        return rows
