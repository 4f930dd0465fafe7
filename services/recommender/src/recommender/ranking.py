"""Scores per recipe kind, cold start, exploration slots and MMR diversity re-ranking.

- A factor model scores a user with their trained vector, or a fold-in of their stored weights
  when they have events the model has not seen; an item-item model scores a user's history
  times its item × item matrix (always fresh: nothing to fold in).
- A user whose events are all on items no training user touched (cold items) gets a list by
  content: their history times the content model's neighbours (strategy ``content``).
- Exploration: a share of every page (its last places) goes to cold items, chosen by content
  similarity to the user's history (or to the item), each marked in the response.
- MMR (maximal marginal relevance, off by default): the list is re-picked greedily, each pick
  among the best-scored items, trading relevance for dissimilarity to the items already picked.
- Pages: a page is a slice of one list built from its first place, so the pages of one ``k``
  (offset 0, k, 2k, …) list every item once, skipping none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from recommender.model_store import Floats, Indexes, LoadedModel
from recommender.scoring import top_k
from recsys_shared.artifacts import ItemItemArrays
from recsys_shared.foldin import signed_history
from recsys_shared.schemas import Strategy

#: MMR's pick t (from 0) is made among the best-scored FACTOR x (t + 1), at least MIN_POOL.
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
    """The ranked rows of the page, their scores, and which rows are exploration slots.

    The page is places ``offset .. offset+k`` of one list whose first places never depend on
    how many are asked: pages of one ``k`` tile it, no item twice and none skipped.
    """
    wanted = offset + k
    slots = int(k * share + 1e-9)
    explore = None
    if slots and scores.strategy is not Strategy.CONTENT:
        explore = _cold_sequence(model, scores, k, slots, wanted, exclude, candidates)
    values = scores.values.copy()
    if explore is None:
        rows, ranked_values = _ranked(model, values, wanted, exclude, candidates, options)
        return rows[offset:], ranked_values[offset:], frozenset()
    return _explored_page(model, values, explore, k, slots, offset, exclude, candidates, options)


def _explored_page(
    model: LoadedModel,
    values: Floats,
    explore: tuple[Indexes, Floats, Indexes],
    k: int,
    slots: int,
    offset: int,
    exclude: Indexes,
    candidates: Indexes | None,
    options: RankingOptions,
) -> tuple[Indexes, Floats, frozenset[int]]:
    """:func:`ranked_page` with exploration: the ranked and the cold sequences merged by
    place up to the page's end, then the page cut out (``values`` is modified)."""
    cold, cold_values, listable = explore
    # Cold items exploration may list are shown in its slots only: the two sequences never
    # share an item, so merging them by place can neither repeat nor drop one.
    values[listable] = -np.inf
    is_slot = _slots(offset + k, k, slots, len(cold))
    needed = int(np.count_nonzero(~is_slot))
    ranked, ranked_values = _ranked(model, values, needed, exclude, candidates, options)
    from_cold = _from_cold(is_slot, len(cold), len(ranked))
    taken = int(np.count_nonzero(from_cold))
    rest = len(from_cold) - taken
    rows = np.empty(len(from_cold), dtype=np.int64)
    rows[from_cold], rows[~from_cold] = cold[:taken], ranked[:rest]
    merged = np.empty(len(from_cold), dtype=np.float32)
    merged[from_cold], merged[~from_cold] = cold_values[:taken], ranked_values[:rest]
    explored = rows[offset:][from_cold[offset:]]
    return rows[offset:], merged[offset:], frozenset(explored.tolist())


def _ranked(
    model: LoadedModel,
    values: Floats,
    wanted: int,
    exclude: Indexes,
    candidates: Indexes | None,
    options: RankingOptions,
) -> tuple[Indexes, Floats]:
    """The first ``wanted`` rows by score, or of MMR's sequence; ``values`` is modified."""
    if options.mmr_lambda is None:
        return top_k(values, k=wanted, exclude=exclude, candidates=candidates)
    return _mmr(model, values, wanted, exclude, candidates, options.mmr_lambda)


def _cold_sequence(
    model: LoadedModel,
    scores: Scores,
    k: int,
    slots: int,
    wanted: int,
    exclude: Indexes,
    candidates: Indexes | None,
) -> tuple[Indexes, Floats, Indexes] | None:
    """The cold items most like the history, best first (as many as the first ``wanted``
    places may take), and the rows of all the cold items exploration may list; None if none.

    No randomness, per request or per user: the same history and filters give the same
    sequence on every request, which is what lets pages computed apart agree.
    """
    if model.cold is None or not model.cold.any():
        return None
    by_content = content_scores(model, *scores.history)
    if by_content is None:
        return None
    eligible = model.cold & (by_content > 0)
    if candidates is not None:
        in_category = np.zeros(len(eligible), dtype=bool)
        in_category[candidates] = True
        eligible &= in_category
    # Ranked among these rows only: a few, where a partition of every item's score cost as
    # much as the rest of the exploration.
    rows = np.flatnonzero(eligible)
    # Enough for every page the places touch to know it has its full share (see _slots),
    # and for every place should the ranked items run out.
    most = max(wanted, -(-wanted // k) * slots)
    found, found_scores = top_k(by_content, k=most, exclude=exclude, candidates=rows)
    return (found, found_scores, rows) if len(found) else None


def _slots(wanted: int, k: int, slots: int, cold: int) -> npt.NDArray[np.bool_]:
    """The exploration slots among the first ``wanted`` places: the last ``slots`` of every
    page of ``k`` counted from place 0 (wherever a page asked starts: each has its share);
    once fewer ``cold`` items are left, the last places of that page only, as many as left."""
    place = np.arange(wanted)
    left = cold - place // k * slots  # cold items left for the place's page: none if <= 0
    is_slot: npt.NDArray[np.bool_] = place % k >= k - np.minimum(left, slots)
    return is_slot


def _from_cold(is_slot: npt.NDArray[np.bool_], cold: int, ranked: int) -> npt.NDArray[np.bool_]:
    """Which places take a cold item: the slots, and every place once the ranked items run out
    (a category short of ranked items still lists its cold ones). The list ends where both
    have run out."""
    from_cold = is_slot.copy()
    ranked_places = np.flatnonzero(~is_slot)
    if ranked < len(ranked_places):
        from_cold[ranked_places[ranked] :] = True
    return from_cold[: cold + ranked]


def _mmr_window(pick: int) -> int:
    """How many of the best-scored items MMR's ``pick``-th choice (from 0) is made among.

    A function of the pick's place only, never of the page asked: a pool sized by the page's
    end would make page 2's first picks differ from page 1's last. Like a page of k choosing
    among three times k (at least 30), the t-th pick reaches no lower than rank 3t.
    """
    return max(_MMR_POOL_FACTOR * (pick + 1), _MMR_MIN_POOL)


def _mmr(
    model: LoadedModel,
    values: Floats,
    wanted: int,
    exclude: Indexes,
    candidates: Indexes | None,
    relevance_weight: float,
) -> tuple[Indexes, Floats]:
    """The first ``wanted`` picks of MMR's greedy sequence; ``values`` is modified.

    Greedy picks depend only on the picks before them and on their window's scores (the pool
    below is the best-scored first, so a shorter request's pool is a prefix of a longer
    one's): the sequence's start is the same whatever ``wanted``.
    """
    pool, pool_scores = top_k(
        values, k=_mmr_window(wanted - 1), exclude=exclude, candidates=candidates
    )
    similarity = _similarity(model, pool)
    if similarity is None or len(pool) <= 1:
        return pool[:wanted], pool_scores[:wanted]
    chosen: list[int] = []
    closest = np.zeros(len(pool), dtype=np.float32)
    blocked = np.zeros(len(pool), dtype=np.float32)  # -inf once picked: adds, never NaN
    penalty = 1.0 - relevance_weight
    windows = [min(_mmr_window(pick), len(pool)) for pick in range(min(wanted, len(pool)))]
    # Relevance is the score scaled to 0..1 over the window: (score - low) / (high - low). The
    # shift is the same for every item, so the argmax only needs the scale (no array per pick).
    high, lows = float(pool_scores[0]), pool_scores[np.asarray(windows) - 1].tolist()
    for window, low in zip(windows, lows, strict=True):
        marginal = (relevance_weight / ((high - low) or 1.0)) * pool_scores[:window]
        marginal -= penalty * closest[:window]
        marginal += blocked[:window]
        best = int(marginal.argmax())
        chosen.append(best)
        blocked[best] = -np.inf
        np.maximum(closest, similarity[best], out=closest)
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
