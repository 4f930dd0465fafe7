"""Reading the parts of a model version that depend on its recipe kind.

Factor recipes (ALS, BPR) are read by implicit itself (``model_store.load_model``); item-item
recipes (item-kNN, EASE, hybrid) are an :class:`~recsys_shared.artifacts.ItemItemArrays`; every
kind may carry the content model and, for ALS, the confidence weighting its fold-in repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recsys_shared.artifacts import (
    CONFIDENCE_FILE,
    CONTENT_FILE,
    MODEL_FILE,
    ArtifactError,
    ItemItemArrays,
    load_npz,
    sparse_from,
)
from recsys_shared.foldin import ConfidenceWeighting


@dataclass(frozen=True)
class ColdStartParts:
    """``content``: each item's content neighbours (None without item metadata); ``cold``:
    the items no training user touched (None for versions from before it was recorded)."""

    content: csr_matrix | None
    cold: npt.NDArray[np.bool_] | None
    confidence: ConfidenceWeighting | None


def cold_start_parts(
    files: dict[str, bytes], ids: dict[str, npt.NDArray[Any]], n_items: int
) -> ColdStartParts:
    content = None
    if CONTENT_FILE in files:
        content = sparse_from("content", load_npz(files[CONTENT_FILE])).tocsr()
        if content.shape != (n_items, n_items):
            raise ArtifactError("The content model does not match the item table.")
    cold = None
    if "item_counts" in ids:
        cold = np.asarray(ids["item_counts"]) == 0
    confidence = None
    if CONFIDENCE_FILE in files:
        confidence = ConfidenceWeighting.from_arrays(load_npz(files[CONFIDENCE_FILE]))
    return ColdStartParts(content, cold, confidence)


def item_item_arrays(files: dict[str, bytes], n_items: int, version: int) -> ItemItemArrays:
    arrays = ItemItemArrays.from_npz(files[MODEL_FILE])
    if arrays.sparse.shape != (n_items, n_items) or (
        len(arrays.columns) and int(arrays.columns.max()) >= n_items
    ):
        raise ArtifactError(f"Model version {version}: id tables do not match the model.")
    return arrays
