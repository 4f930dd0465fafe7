"""Item-item recipes: a user's scores are their history times an item × item matrix.

Item-kNN keeps implicit's sparse neighbour similarities; EASE solves its closed form on the most
popular items (a dense block: pruning it to neighbours costs accuracy); the hybrid adds the
content model's neighbours, weighted, so items with few or no interactions still score.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from implicit.utils import ParameterWarning
from scipy.sparse import csr_matrix

from recsys_shared.artifacts import MODEL_FILE, ItemItemArrays
from recsys_shared.foldin import signed_history
from recsys_shared.schemas import EaseRecipe, HybridRecipe, ItemKnnRecipe
from retraining_worker.recipes.base import Floats, TrainingSet

_NO_COLUMNS = np.empty(0, dtype=np.int64)
_NO_BLOCK = np.empty((0, 0), dtype=np.float32)


def item_item_scores(arrays: ItemItemArrays, history: csr_matrix, negative_weight: float) -> Floats:
    """``history`` (signed stored weights) × the item-item matrix, for every row."""
    signed = history.astype(np.float32, copy=True)
    signed.data = signed_history(signed.data, negative_weight)
    scores = np.zeros((history.shape[0], arrays.sparse.shape[1]), dtype=np.float32)
    if arrays.sparse.nnz:
        scores += (signed @ arrays.sparse).toarray()
    if len(arrays.columns):
        scores[:, arrays.columns] += signed[:, arrays.columns] @ arrays.block
    return scores


@dataclass
class ItemItemModel:
    recipe: ItemKnnRecipe | EaseRecipe | HybridRecipe
    arrays: ItemItemArrays

    def score(self, history: csr_matrix) -> Floats:
        return item_item_scores(self.arrays, history, self.recipe.negative_weight)

    def files(self) -> dict[str, bytes]:
        return {MODEL_FILE: self.arrays.to_npz()}


def fit_item_knn(recipe: ItemKnnRecipe, data: TrainingSet) -> ItemItemModel:
    kind = CosineRecommender if recipe.similarity == "cosine" else BM25Recommender
    model = kind(K=recipe.neighbours, num_threads=data.threads)
    with warnings.catch_warnings():
        # implicit converts its own intermediate COO matrix to CSR and warns about it.
        warnings.simplefilter("ignore", ParameterWarning)
        model.fit(data.positives, show_progress=False)
    similarity = csr_matrix(model.similarity, dtype=np.float32)
    similarity.setdiag(0)  # an item is not its own neighbour (it is seen, anyway)
    similarity.eliminate_zeros()
    return ItemItemModel(recipe, ItemItemArrays(_NO_COLUMNS, _NO_BLOCK, similarity))


def ease_block(positives: csr_matrix, l2: float, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """EASE's weights B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, over the ``max_items``
    items most users touched (ties: the lower row): the columns and the dense block."""
    users_per_item = np.bincount(positives.indices, minlength=positives.shape[1])
    touched = np.flatnonzero(users_per_item)
    order = touched[np.argsort(-users_per_item[touched], kind="stable")]
    columns = np.sort(order[:max_items]).astype(np.int64)
    if not len(columns):
        return _NO_COLUMNS, _NO_BLOCK
    part = positives[:, columns]
    gram = (part.T @ part).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    block = inverse / -np.diag(inverse)
    block[np.diag_indices_from(block)] = 0.0
    return columns, block.astype(np.float32)


def fit_ease(recipe: EaseRecipe, data: TrainingSet) -> ItemItemModel:
    columns, block = ease_block(data.positives, recipe.l2, recipe.max_items)
    n_items = data.matrix.shape[1]
    empty = csr_matrix((n_items, n_items), dtype=np.float32)
    return ItemItemModel(recipe, ItemItemArrays(columns, block, empty))


def fit_hybrid(recipe: HybridRecipe, data: TrainingSet) -> ItemItemModel:
    columns, block = ease_block(data.positives, recipe.l2, recipe.max_items)
    n_items = data.matrix.shape[1]
    content = data.content if data.content is not None else csr_matrix((n_items, n_items))
    content = _top_neighbours(content, recipe.content_neighbours) * recipe.content_weight
    return ItemItemModel(
        recipe, ItemItemArrays(columns, block, csr_matrix(content, dtype=np.float32))
    )


def _top_neighbours(similarity: csr_matrix, k: int) -> csr_matrix:
    """Each row's k largest entries (the content model may keep more)."""
    similarity = similarity.tocsr()
    rows, cols, values = [], [], []
    for row in range(similarity.shape[0]):
        start, end = similarity.indptr[row], similarity.indptr[row + 1]
        data = similarity.data[start:end]
        keep = np.argsort(-data, kind="stable")[:k]
        rows.append(np.full(len(keep), row))
        cols.append(similarity.indices[start:end][keep])
        values.append(data[keep])
    if not rows:
        return csr_matrix(similarity.shape, dtype=np.float32)
    return csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=similarity.shape,
        dtype=np.float32,
    )
