"""Scores per recipe kind, cold start, exploration slots and MMR diversity re-ranking.

- A factor model scores a user with their trained vector, or a fold-in of their stored weights
  when they have events the model has not seen; an item-item model scores a user's history
  times its item × item matrix (always fresh: nothing to fold in).
- A user whose events are all on items no training user touched (cold items) gets a list by
  content: their history times the content model's neighbours (strategy ``content``).
- Exploration: a share of a list's first page goes to cold items, chosen by content
  similarity to the user's history (or to the item), each marked in the response.
- MMR (maximal marginal relevance, off by default): the page is re-picked greedily from a
  larger pool, trading relevance for dissimilarity to the items already picked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix

from recommender.model_store import Floats, Indexes, LoadedModel
from recommender.scoring import top_k
from recsys_shared.artifacts import ItemItemArrays
from recsys_shared.foldin import signed_history
from recsys_shared.schemas import Strategy

#: MMR picks from this many times the page's length (and at least _MMR_MIN_POOL items).
_MMR_POOL_FACTOR = 3
_MMR_MIN_POOL = 30


@dataclass(frozen=True)
class RankingOptions:
    """``exploration_share``/``similar_exploration_share``: share of a user's / an item's list
    given to cold items; ``mmr_lambda``: MMR's relevance weight (None: no re-ranking)."""

    exploration_share: float = 0.0
    similar_exploration_share: float = 0.0
    mmr_lambda: float | None = None


@dataclass(frozen=True)
class Scores:
    values: Floats
    strategy: Strategy
    #: The history exploration compares cold items with: item rows and their weights.
    history: tuple[Indexes, Floats] = field(
        default=(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))
    )


#: Reading a history's rows costs about eight times more per stored entry than a product over
#: the whole matrix (numpy's gathers against scipy's loop in C; 9,066 items x 50 neighbours:
#: 1.4 ms against 0.3 for a history of 5,000 items, 27 us against 0.3 ms for 71): past an
#: eighth of the matrix's entries, a history takes the whole product.
_ROWS_COST_RATIO = 8
#: The same for the dense block: copying a history's rows out of it before the product costs
#: more than the product over the whole block once they are more than a quarter of it
#: (2,000 x 2,000: 600 rows 0.48 ms against 0.33 for the whole block, 200 rows 0.12 ms).
_BLOCK_ROWS_COST_RATIO = 4


def _history_times(matrix: csr_matrix, rows: Indexes, weights: Floats) -> Floats:
    """The history (distinct item ``rows`` and their ``weights``) times ``matrix``: summed
    from the history's rows for a short history, the whole product for a long one."""
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    entries = int(lengths.sum())
    if entries * _ROWS_COST_RATIO > matrix.nnz:
        history = np.zeros(matrix.shape[0], dtype=np.float32)
        history[rows] = weights
        return np.asarray(history @ matrix, dtype=np.float32)
    # Read straight from the CSR arrays: scipy's product of a one-row matrix spent most of its
    # time building and checking that matrix, more than the ranking itself (profiled on
    # MovieLens, docs/benchmarks.md). Each row's run of positions in ``data``, one after the
    # other, each entry times its row's weight, summed per column.
    runs = np.arange(entries) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    values = matrix.data[runs] * np.repeat(weights, lengths)
    return np.bincount(matrix.indices[runs], values, minlength=matrix.shape[1]).astype(np.float32)


def content_scores(model: LoadedModel, rows: Indexes, weights: Floats) -> Floats | None:
    """The history's positive weights times the content neighbours; None if that says
    nothing (no content model, or no neighbour)."""
    if model.content is None:
        return None
    positive = weights > 0
    if not positive.any():
        return None
    scores = _history_times(model.content, rows[positive], weights[positive])
    return scores if scores.any() else None


def user_scores(
    model: LoadedModel, trained_row: int | None, fresh: bool, rows: Indexes, weights: Floats
) -> Scores | None:
    """Every item's score for a user (``rows``/``weights``: their stored history on the
    model's items; ``fresh``: the model has not seen all of it); None: nothing to go on."""
    warm_weights = weights if model.cold is None else weights[~model.cold[rows]]
    if not (warm_weights > 0).any():
        if len(rows):
            by_content = content_scores(model, rows, weights)
            if by_content is not None:
                return Scores(by_content, Strategy.CONTENT, (rows, weights))
        # The model's row only if the model saw everything the user did: after an erasure
        # the same id may have come back with new events that say nothing positive.
        if model.item_item is not None or trained_row is None or fresh:
            return None
        return Scores(
            model.item_factors @ model.user_factors[trained_row],
            Strategy.PERSONALIZED,
            (rows, weights),
        )
    if model.item_item is not None:
        return Scores(
            _item_item_scores(
                model.item_item, rows, signed_history(weights, model.negative_weight)
            ),
            Strategy.PERSONALIZED,
            (rows, weights),
        )
    if trained_row is not None and not fresh:
        vector = model.user_factors[trained_row]
    else:
        vector = model.fold_in(rows, weights)
    return Scores(model.item_factors @ vector, Strategy.PERSONALIZED, (rows, weights))


def _item_item_scores(arrays: ItemItemArrays, rows: Indexes, signed: Floats) -> Floats:
    """A history (item ``rows``, ``signed`` weights) times the sparse part plus the block."""
    scores = _history_times(arrays.sparse, rows, signed)
    if len(arrays.columns):
        scores[arrays.columns] += _block_times(arrays, rows, signed)
    return scores


def _block_times(arrays: ItemItemArrays, rows: Indexes, signed: Floats) -> Floats:
    """The history's items among the block's (``columns`` is sorted) times the block."""
    positions = np.searchsorted(arrays.columns, rows).clip(max=len(arrays.columns) - 1)
    inside = arrays.columns[positions] == rows
    product: Floats
    if np.count_nonzero(inside) * _BLOCK_ROWS_COST_RATIO > len(arrays.columns):
        history = np.zeros(len(arrays.columns), dtype=np.float32)
        history[positions[inside]] = signed[inside]
        product = history @ arrays.block
    else:
        product = signed[inside] @ arrays.block[positions[inside]]
    return product


def similar_scores(model: LoadedModel, row: int) -> Scores | None:
    """Every item's similarity to item ``row``: by the recipe, or by content for a cold item
    (or one outside an item-item model's items); None when neither knows it."""
    one = (np.array([row], dtype=np.int64), np.ones(1, dtype=np.float32))
    cold = model.cold is not None and bool(model.cold[row])
    if not cold and model.item_item is None:
        unit = model.unit_item_factors
        return Scores(unit @ unit[row], Strategy.SIMILAR, one)
    if not cold and model.item_item is not None:
        arrays = model.item_item
        values = arrays.sparse[row].toarray()[0].astype(np.float32)
        position = np.searchsorted(arrays.columns, row)
        if position < len(arrays.columns) and arrays.columns[position] == row:
            values[arrays.columns] += arrays.block[position]
        if values.any():
            return Scores(values, Strategy.SIMILAR, one)
    by_content = content_scores(model, *one)
    return Scores(by_content, Strategy.CONTENT, one) if by_content is not None else None


def ranked_page(
    model: LoadedModel,
    scores: Scores,
    *,
    k: int,
    offset: int,
    exclude: Indexes,
    candidates: Indexes | None,
    options: RankingOptions,
    share: float,
) -> tuple[Indexes, Floats, frozenset[int]]:
    """The ranked rows of the page, their scores, and which rows are exploration slots."""
    if options.mmr_lambda is None:
        rows, values = top_k(
            scores.values.copy(), k=k, offset=offset, exclude=exclude, candidates=candidates
        )
    else:
        rows, values = _mmr(
            model, scores.values, k + offset, exclude, candidates, options.mmr_lambda
        )
        rows, values = rows[offset:], values[offset:]
    slots = int(k * share + 1e-9)
    if not slots or offset or scores.strategy is Strategy.CONTENT:
        return rows, values, frozenset()
    return _explore(model, scores, rows, values, k, slots, exclude, candidates)


def _explore(
    model: LoadedModel,
    scores: Scores,
    rows: Indexes,
    values: Floats,
    k: int,
    slots: int,
    exclude: Indexes,
    candidates: Indexes | None,
) -> tuple[Indexes, Floats, frozenset[int]]:
    """The page's last ``slots`` places given to the cold items most like the history."""
    if model.cold is None or not model.cold.any():
        return rows, values, frozenset()
    by_content = content_scores(model, *scores.history)
    if by_content is None:
        return rows, values, frozenset()
    by_content[~model.cold] = -np.inf
    by_content[by_content <= 0] = -np.inf
    taken = np.concatenate((exclude, rows))
    found, found_scores = top_k(by_content, k=slots, exclude=taken, candidates=candidates)
    if not len(found):
        return rows, values, frozenset()
    # The page's tail gives way; a short page gets the explored items added instead.
    keep = min(len(rows), k - len(found))
    merged_rows = np.concatenate((rows[:keep], found))
    merged_values = np.concatenate((values[:keep], found_scores))
    return merged_rows, merged_values, frozenset(int(row) for row in found)


def _mmr(
    model: LoadedModel,
    values: Floats,
    wanted: int,
    exclude: Indexes,
    candidates: Indexes | None,
    relevance_weight: float,
) -> tuple[Indexes, Floats]:
    pool_size = max(wanted * _MMR_POOL_FACTOR, _MMR_MIN_POOL)
    pool, pool_scores = top_k(values.copy(), k=pool_size, exclude=exclude, candidates=candidates)
    similarity = _similarity(model, pool)
    if similarity is None or len(pool) <= 1:
        return pool[:wanted], pool_scores[:wanted]
    spread = float(pool_scores.max() - pool_scores.min()) or 1.0
    relevance = (pool_scores - pool_scores.min()) / spread
    chosen: list[int] = []
    closest = np.zeros(len(pool), dtype=np.float32)
    available = np.ones(len(pool), dtype=bool)
    for _ in range(min(wanted, len(pool))):
        marginal = relevance_weight * relevance - (1.0 - relevance_weight) * closest
        marginal[~available] = -np.inf
        best = int(np.argmax(marginal))
        chosen.append(best)
        available[best] = False
        closest = np.maximum(closest, similarity[best])
    picked = np.asarray(chosen, dtype=np.int64)
    return pool[picked], pool_scores[picked]


def _similarity(model: LoadedModel, rows: Indexes) -> Floats | None:
    """Pairwise similarity of ``rows``: item factors' cosine, else content neighbours."""
    if model.item_item is None and len(model.unit_item_factors):
        unit = model.unit_item_factors[rows]
        return unit @ unit.T
    if model.content is not None:
        return np.asarray(model.content[rows][:, rows].toarray(), dtype=np.float32)
    return None
