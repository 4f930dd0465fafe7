"""The category filter's rows (``recommender.catalogue_filter``): what any client may ask must
not grow what a recommender holds, and a catalogue category still filters to its items."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import numpy as np

from recommender.catalogue_filter import CatalogueFilter
from recommender.model_store import DictIndex, LoadedModel
from recsys_shared.features import FeatureReader

VERSION = 3


class _Catalogue:
    """The two reads the filter makes, from a catalogue in memory; counts category reads."""

    def __init__(self, categories: dict[str, set[str]]) -> None:
        self.categories = categories
        self.category_reads = 0

    async def unavailable_items(self) -> set[str]:
        return set()

    async def category_items(self, category: str) -> set[str]:
        self.category_reads += 1
        return set(self.categories.get(category, ()))


def _model() -> LoadedModel:
    items = DictIndex(np.array(["a", "b", "c", "d"]))
    return cast(LoadedModel, SimpleNamespace(version=VERSION, items=items))


def _kept(catalogue_filter: CatalogueFilter) -> int:
    return len(catalogue_filter._rows[VERSION].categories)


async def test_unknown_categories_are_answered_but_not_kept() -> None:
    catalogue = _Catalogue({"kitchen": {"d", "b", "gone"}})
    catalogue_filter = CatalogueFilter(cast(FeatureReader, catalogue))
    model = _model()

    for number in range(2_000):
        rows = await catalogue_filter.category(model, 1, f"junk-{number}")
        assert rows.tolist() == []

    assert _kept(catalogue_filter) == 0
    # A catalogue category's model rows, sorted (an item the model lacks has none), kept.
    assert (await catalogue_filter.category(model, 1, "kitchen")).tolist() == [1, 3]
    reads = catalogue.category_reads
    assert (await catalogue_filter.category(model, 1, "kitchen")).tolist() == [1, 3]
    assert catalogue.category_reads == reads
    assert _kept(catalogue_filter) == 1


async def test_catalogue_categories_kept_are_bounded() -> None:
    # Any client may create categories (items are a client route): their count is no bound.
    catalogue = _Catalogue({f"made-up-{number}": {"a"} for number in range(50)})
    catalogue_filter = CatalogueFilter(cast(FeatureReader, catalogue))
    catalogue_filter.MAX_CATEGORIES = 8
    model = _model()

    for number in range(50):
        rows = await catalogue_filter.category(model, 1, f"made-up-{number}")
        assert rows.tolist() == [0]

    assert _kept(catalogue_filter) == 8
    # The latest are the ones kept.
    reads = catalogue.category_reads
    assert (await catalogue_filter.category(model, 1, "made-up-49")).tolist() == [0]
    assert catalogue.category_reads == reads
