"""The content model: items described by their categories and title words.

TF-IDF over those tokens, each item's vector of unit length, and for each item its nearest
items by cosine. It needs no interactions, so it places what collaborative models cannot: a
catalogued item nobody touched yet, and a user whose only events are on such items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix, diags

from recsys_shared.artifacts import ArtifactError

_WORD = re.compile(r"[^\W_]{2,}")
#: Rows of the similarity product computed at once: bounds the dense block to ~40 MB.
_CHUNK = 1000


@dataclass(frozen=True)
class Catalogue:
    """Item metadata from a snapshot's ``catalogue.npz``."""

    item_ids: npt.NDArray[np.str_]
    titles: npt.NDArray[np.str_]
    categories: list[list[str]]

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]]) -> Catalogue:
        try:
            offsets = arrays["category_offsets"].astype(np.int64)
            flat = arrays["categories"].astype(np.str_).tolist()
            item_ids = arrays["item_ids"].astype(np.str_)
            titles = arrays["titles"].astype(np.str_)
        except KeyError as error:
            raise ArtifactError(f"The snapshot's catalogue lacks {error}.") from error
        categories = [flat[offsets[i] : offsets[i + 1]] for i in range(len(item_ids))]
        return cls(item_ids, titles, categories)

    @classmethod
    def empty(cls) -> Catalogue:
        return cls(np.empty(0, dtype=np.str_), np.empty(0, dtype=np.str_), [])


def tokens(title: str, categories: list[str]) -> list[str]:
    """Categories (whole, spaces and all) and the words of the title, lower-cased."""
    return [f"category:{category.lower()}" for category in categories] + [
        f"word:{word}" for word in _WORD.findall(title.lower())
    ]


def content_features(item_ids: npt.NDArray[np.str_], catalogue: Catalogue) -> csr_matrix:
    """Items (in ``item_ids`` order) × tokens, TF-IDF, rows of unit length; an item the
    catalogue does not describe has an empty row."""
    position = {item: row for row, item in enumerate(item_ids.tolist())}
    vocabulary: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for item, title, categories in zip(
        catalogue.item_ids.tolist(), catalogue.titles.tolist(), catalogue.categories, strict=True
    ):
        row = position.get(item)
        if row is None:
            continue
        for token in set(tokens(title, categories)):
            rows.append(row)
            cols.append(vocabulary.setdefault(token, len(vocabulary)))
    counts = csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)),
        shape=(len(item_ids), len(vocabulary)),
    )
    frequency = np.bincount(counts.indices, minlength=len(vocabulary))
    idf = np.log((1 + len(item_ids)) / (1 + frequency)).astype(np.float32) + 1.0
    weighted = counts @ diags(idf)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return csr_matrix(diags(1.0 / norms) @ weighted, dtype=np.float32)


def content_neighbours(features: csr_matrix, k: int) -> csr_matrix:
    """Each item's k most similar other items by cosine of their content (0 excluded)."""
    n_items = features.shape[0]
    rows, cols, values = [], [], []
    transposed = features.T.tocsc()
    for start in range(0, n_items, _CHUNK):
        block = (features[start : start + _CHUNK] @ transposed).toarray()
        for offset in range(block.shape[0]):
            block[offset, start + offset] = 0.0  # not its own neighbour
        take = min(k, n_items - 1)
        if take <= 0:
            break
        best = np.argpartition(-block, take - 1, axis=1)[:, :take]
        best_values = np.take_along_axis(block, best, axis=1)
        keep = best_values > 0
        rows.append(np.repeat(np.arange(start, start + block.shape[0]), take)[keep.ravel()])
        cols.append(best[keep])
        values.append(best_values[keep])
    if not rows:
        return csr_matrix((n_items, n_items), dtype=np.float32)
    return csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
