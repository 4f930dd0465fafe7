"""Item-item scores are read from the CSR arrays directly for a short history, and taken as the
product over the whole matrix for a long one (``recommender.ranking``): either way they must be
what the matrix product of the history with the model says."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import random as sparse_random

from recommender import ranking
from recommender.ranking import _item_item_scores
from recsys_shared.artifacts import ItemItemArrays


@pytest.mark.parametrize("path", ["history's rows", "whole matrix"])
@pytest.mark.parametrize("seed", range(5))
def test_item_item_scores_are_the_history_times_sparse_plus_block(
    seed: int, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any history's entries times 0 are never more than the matrix's; times 10**9 always are.
    ratio = 0 if path == "history's rows" else 10**9
    monkeypatch.setattr(ranking, "_ROWS_COST_RATIO", ratio)
    monkeypatch.setattr(ranking, "_BLOCK_ROWS_COST_RATIO", ratio)
    generator = np.random.default_rng(seed)
    n_items, n_block = 60, 12
    sparse = sparse_random(n_items, n_items, density=0.1, format="csr", rng=generator, dtype="f4")
    columns = np.sort(generator.choice(n_items, n_block, replace=False)).astype(np.int64)
    block = generator.standard_normal((n_block, n_block)).astype(np.float32)
    arrays = ItemItemArrays(columns=columns, block=block, sparse=sparse)
    # A history of items in and out of the block, negative weights among them.
    rows = np.sort(generator.choice(n_items, 15, replace=False)).astype(np.int64)
    weights = generator.uniform(-1, 3, len(rows)).astype(np.float32)

    whole = sparse.toarray()
    whole[np.ix_(columns, columns)] += block
    history = np.zeros(n_items, dtype=np.float32)
    history[rows] = weights

    scores = _item_item_scores(arrays, rows, weights)

    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, history @ whole, rtol=1e-5, atol=1e-5)
