"""IdIndex: string ids to model rows."""

from __future__ import annotations

import numpy as np

from recommender.model_store import IdIndex

IDS = ["u10", "u2", "zeta", "alpha", "u1", "m:42", "Amélie", "東京", "🎬film"]


def _index(ids: list[str] = IDS) -> IdIndex:
    return IdIndex(np.array(ids))


def test_get_finds_every_known_id_at_its_row() -> None:
    index = _index()
    assert len(index) == len(IDS)
    for row, identifier in enumerate(IDS):
        assert index.get(identifier) == row


def test_get_unknown_ids() -> None:
    index = _index()
    for unknown in ["u3", "", "u", "u100", "zzz", "Amelie", "東", "a" * 200, "🎬"]:
        assert index.get(unknown) is None


def test_lookup_keeps_the_order_of_the_input() -> None:
    index = _index()
    wanted = ["東京", "u1", "🎬film", "u10", "alpha"]
    rows, known = index.lookup(wanted)
    assert rows.tolist() == [IDS.index(identifier) for identifier in wanted]
    assert known.tolist() == [True] * len(wanted)
    assert rows.dtype == np.int64


def test_lookup_marks_unknown_ids_and_skips_their_rows() -> None:
    index = _index()
    wanted = ["nope", "u2", "Amélie!", "zzzz-after-everything", "m:42", "0-before-everything"]
    rows, known = index.lookup(wanted)
    assert known.tolist() == [False, True, False, False, True, False]
    assert rows.tolist() == [IDS.index("u2"), IDS.index("m:42")]


def test_lookup_of_nothing_and_in_an_empty_index() -> None:
    rows, known = _index().lookup([])
    assert len(rows) == 0
    assert len(known) == 0
    empty = IdIndex(np.array([], dtype=np.str_))
    assert empty.get("u1") is None
    rows, known = empty.lookup(["u1", "u2"])
    assert len(rows) == 0
    assert known.tolist() == [False, False]


def test_ids_longer_than_any_known_id_are_not_mistaken_for_a_prefix() -> None:
    index = _index(["ab", "abc"])
    assert index.get("abcd") is None
    rows, known = index.lookup(["abcd", "abc", "ab"])
    assert known.tolist() == [False, True, True]
    assert rows.tolist() == [1, 0]
