"""Interactions as sparse matrices, and the time-ordered holdout split."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from retraining_worker.data import Interactions, seen_matrix, temporal_split
from retraining_worker.evaluation import ranking_metrics

MakeInteractions = Callable[..., Interactions]


# ── Interactions.matrix ──────────────────────────────────────────────────────────────────
def test_matrix_keeps_only_positive_weights_and_sums_duplicates(
    make_interactions: MakeInteractions,
) -> None:
    data = make_interactions(
        rows=[0, 0, 1, 1, 2, 2],
        cols=[1, 1, 0, 2, 2, 0],
        weights=[1.5, 2.0, 0.0, -1.0, 3.0, 0.5],
        n_users=4,
        n_items=3,
    )

    matrix = data.matrix()

    assert matrix.shape == (4, 3)
    assert matrix.dtype == np.float32
    expected = np.array(
        [
            [0.0, 3.5, 0.0],  # the two (0, 1) interactions are summed
            [0.0, 0.0, 0.0],  # zero and negative weights never enter
            [0.5, 0.0, 3.0],
            [0.0, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(matrix.toarray(), expected)
    # No explicit zeros stored for the refused interactions, no duplicate entries left.
    assert matrix.nnz == 3
    assert np.all(matrix.data > 0)


def test_matrix_mask_selects_a_subset(make_interactions: MakeInteractions) -> None:
    data = make_interactions(
        rows=[0, 0, 1, 2], cols=[1, 1, 0, 2], weights=[1.5, 2.0, 4.0, 3.0], n_items=3
    )
    mask = np.array([True, False, False, True])

    matrix = data.matrix(mask)

    expected = np.zeros((3, 3), dtype=np.float32)
    expected[0, 1] = 1.5
    expected[2, 2] = 3.0
    np.testing.assert_array_equal(matrix.toarray(), expected)
    assert matrix.shape == data.shape


def test_shuffled_reassigns_items_only(clusters: Interactions) -> None:
    noisy = clusters.shuffled(7)

    np.testing.assert_array_equal(noisy.rows, clusters.rows)
    np.testing.assert_array_equal(noisy.weights, clusters.weights)
    np.testing.assert_array_equal(noisy.times, clusters.times)
    assert not np.array_equal(noisy.cols, clusters.cols)
    # A permutation: every item keeps its popularity.
    np.testing.assert_array_equal(np.sort(noisy.cols), np.sort(clusters.cols))
    np.testing.assert_array_equal(clusters.shuffled(7).cols, noisy.cols)


def test_seen_matrix_includes_non_positive_interactions(
    make_interactions: MakeInteractions,
) -> None:
    data = make_interactions(
        rows=[0, 0, 1, 1], cols=[0, 1, 1, 2], weights=[1.0, 0.0, 2.0, -1.0], n_items=3
    )
    mask = np.array([True, True, True, False])

    seen = seen_matrix(data, mask, np.array([1, 0], dtype=np.int32))

    # Rows follow the order of the users asked for; the weight-0 item is seen too.
    np.testing.assert_array_equal(seen.toarray() > 0, [[False, True, False], [True, True, False]])


# ── temporal_split ───────────────────────────────────────────────────────────────────────
# (user, item, time), listed out of time order on purpose.
_HAND_CASE = [
    (0, 1, 11.0),
    (2, 3, 12.0),
    (0, 0, 1.0),
    (1, 4, 9.0),
    (2, 0, 4.0),
    (0, 4, 8.0),
    (1, 1, 2.0),
    (2, 2, 10.0),
    (0, 2, 3.0),
    (1, 3, 5.0),
    (0, 3, 7.0),
    (2, 1, 6.0),
]


def test_temporal_split_hand_case(make_interactions: MakeInteractions) -> None:
    rows, cols, times = zip(*_HAND_CASE, strict=True)
    data = make_interactions(list(rows), list(cols), times=list(times), n_users=4, n_items=5)

    split = temporal_split(data, 0.5)

    # 12 interactions, half held out: the cut is the 7th-oldest time.
    assert split.cut_time == 7.0
    np.testing.assert_array_equal(split.train, data.times < 7.0)
    # Recent: user 0 at 7, 8, 11 (items 3, 4, 1); user 1 at 9 only; user 2 at 10, 12 (2, 3).
    # User 1 has a single recent interaction and is not evaluated; user 3 has none.
    assert split.users.tolist() == [0, 2]
    assert split.targets == [{4, 1}, {3}]
    np.testing.assert_array_equal(split.revealed_mask, (data.times < 7.0) | np.isin(times, [7, 10]))
    # What the model may use for each evaluated user: train plus the revealed recent half.
    np.testing.assert_array_equal(
        split.revealed.toarray() > 0,
        [[True, False, True, True, False], [True, True, True, False, False]],
    )


# (user, item, time, weight): a rating below 2.5 is a negative weight, exactly 2.5 is 0.
_RATED_CASE = [
    (0, 0, 1.0, 1.0),
    (1, 0, 2.0, 1.0),
    (2, 1, 3.0, 1.0),
    # Recent, from time 10 on: user 0 reveals items 1 and 2 (one disliked) and is asked for 3,
    # 4 and 5, of which only 5 was liked.
    (0, 1, 10.0, 2.0),
    (0, 2, 11.0, -1.5),
    (0, 3, 12.0, -2.0),
    (0, 4, 13.0, 0.0),
    (0, 5, 14.0, 1.5),
    # Users 1 and 2 only disliked, or were neutral about, their later half.
    (1, 1, 15.0, 1.0),
    (1, 2, 16.0, -1.0),
    (2, 2, 17.0, 1.0),
    (2, 3, 18.0, 0.0),
    # User 3 reveals a disliked item and liked the next one.
    (3, 0, 19.0, -1.0),
    (3, 4, 20.0, 2.0),
]


def test_temporal_split_targets_only_liked_items(make_interactions: MakeInteractions) -> None:
    rows, cols, times, weights = zip(*_RATED_CASE, strict=True)
    data = make_interactions(
        list(rows), list(cols), times=list(times), weights=list(weights), n_items=6
    )

    split = temporal_split(data, 0.75)

    assert split.cut_time == 10.0
    # Users whose later half holds no liked item are not evaluated: nothing there is a hit.
    assert split.users.tolist() == [0, 3]
    assert split.targets == [{5}, {4}]
    # The early halves are revealed whatever their weight; the unevaluated users reveal none.
    np.testing.assert_array_equal(
        split.revealed_mask, (data.times < 10.0) | np.isin(times, [10, 11, 19])
    )
    np.testing.assert_array_equal(
        split.revealed.toarray(),
        [[1.0, 2.0, -1.5, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
    )
    # The disliked revealed items are seen, so never recommended again.
    seen = seen_matrix(data, split.revealed_mask, split.users)
    np.testing.assert_array_equal(
        seen.toarray() > 0,
        [[True, True, True, False, False, False], [True, False, False, False, False, False]],
    )
    # A list of what user 0 disliked or was neutral about scores nothing; the liked item does.
    disliked = np.array([[3, 4], [1, 2]], dtype=np.int64)
    liked = np.array([[5, 3], [4, 1]], dtype=np.int64)
    assert ranking_metrics(disliked, split.targets, k=2, n_items=6)["precision_at_2"] == 0.0
    assert ranking_metrics(liked, split.targets, k=2, n_items=6)["precision_at_2"] == 0.5


def test_temporal_split_cuts_by_time_on_random_data(clusters: Interactions) -> None:
    fraction = 0.2
    split = temporal_split(clusters, fraction)

    train = split.train
    # Every train interaction is older than the cut; every other one is at or after it.
    assert np.all(clusters.times[train] < split.cut_time)
    assert np.all(clusters.times[~train] >= split.cut_time)
    # The held-out part is the most recent share of the interactions (at least the fraction).
    assert (~train).sum() >= fraction * len(clusters)
    assert (~train).sum() <= fraction * len(clusters) + 1
    assert clusters.times[train].max() < clusters.times[~train].min()
    assert np.all(split.revealed_mask[train])

    recent_by_user: dict[int, list[int]] = defaultdict(list)
    for index in np.flatnonzero(~train):
        recent_by_user[int(clusters.rows[index])].append(int(index))

    expected_users = sorted(user for user, recent in recent_by_user.items() if len(recent) >= 2)
    assert split.users.tolist() == expected_users
    assert len(expected_users) > 10  # the data set really exercises the split
    assert len(split.targets) == len(expected_users)

    for user, targets in zip(split.users.tolist(), split.targets, strict=True):
        recent = sorted(recent_by_user[user], key=lambda index: clusters.times[index])
        half = len(recent) // 2
        early, late = recent[:half], recent[half:]
        assert half >= 1
        assert all(split.revealed_mask[index] for index in early)
        assert not any(split.revealed_mask[index] for index in late)
        assert targets == {int(clusters.cols[index]) for index in late}

    # Users with a single recent interaction reveal nothing of it.
    for user, recent in recent_by_user.items():
        if len(recent) < 2:
            assert not split.revealed_mask[recent[0]]
            assert user not in split.users

    np.testing.assert_array_equal(
        split.revealed.toarray(), clusters.matrix(split.revealed_mask)[split.users].toarray()
    )


def test_temporal_split_does_not_depend_on_input_order(clusters: Interactions) -> None:
    """Never a random sample: the same interactions in another order give the same split."""
    order = np.random.default_rng(1).permutation(len(clusters))
    permuted = Interactions(
        clusters.user_ids,
        clusters.item_ids,
        clusters.rows[order],
        clusters.cols[order],
        clusters.weights[order],
        clusters.times[order],
    )

    first, second = temporal_split(clusters, 0.3), temporal_split(permuted, 0.3)

    assert first.cut_time == second.cut_time
    assert first.users.tolist() == second.users.tolist()
    assert first.targets == second.targets
    np.testing.assert_array_equal(first.train[order], second.train)
    np.testing.assert_array_equal(first.revealed_mask[order], second.revealed_mask)


def test_temporal_split_without_enough_recent_activity(make_interactions: MakeInteractions) -> None:
    # Each user's recent window holds a single interaction: nobody can be evaluated.
    data = make_interactions(
        rows=[0, 0, 1, 1, 2, 2], cols=[0, 1, 1, 2, 2, 0], times=[1, 5, 2, 6, 3, 7]
    )

    split = temporal_split(data, 0.5)

    assert split.cut_time == 5.0
    assert len(split.users) == 0
    assert split.targets == []
    assert split.revealed.shape == (0, 3)
    np.testing.assert_array_equal(split.revealed_mask, split.train)
