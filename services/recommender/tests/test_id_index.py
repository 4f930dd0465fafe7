"""String ids to model rows: one contract, run against both implementations (the sorted
array for users, the dict for items)."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.model_store import DictIndex, IdIndex

IDS = ["u10", "u2", "zeta", "alpha", "u1", "m:42", "Amélie", "東京", "🎬film"]
Index = IdIndex | DictIndex


@pytest.fixture(params=[IdIndex, DictIndex])
def kind(request: pytest.FixtureRequest) -> type[Index]:
    implementation: type[Index] = request.param
    return implementation


@pytest.fixture
def index(kind: type[Index]) -> Index:
    return kind(np.array(IDS))


def test_name_is_the_id_at_a_row(index: Index) -> None:
    assert [index.name(row) for row in range(len(IDS))] == IDS
    assert all(type(index.name(row)) is str for row in range(len(IDS)))


def test_get_finds_every_known_id_at_its_row(index: Index) -> None:
    assert len(index) == len(IDS)
    for row, identifier in enumerate(IDS):
        assert index.get(identifier) == row


def test_get_unknown_ids(index: Index) -> None:
    for unknown in ["u3", "", "u", "u100", "zzz", "Amelie", "東", "a" * 200, "🎬"]:
        assert index.get(unknown) is None


def test_lookup_keeps_the_order_of_the_input(index: Index) -> None:
    wanted = ["東京", "u1", "🎬film", "u10", "alpha"]
    rows, known = index.lookup(wanted)
    assert rows.tolist() == [IDS.index(identifier) for identifier in wanted]
    assert known.tolist() == [True] * len(wanted)
    assert rows.dtype == np.int64


def test_lookup_marks_unknown_ids_and_skips_their_rows(index: Index) -> None:
    wanted = ["nope", "u2", "Amélie!", "zzzz-after-everything", "m:42", "0-before-everything"]
    rows, known = index.lookup(wanted)
    assert known.tolist() == [False, True, False, False, True, False]
    assert rows.tolist() == [IDS.index("u2"), IDS.index("m:42")]


def test_lookup_of_nothing_and_in_an_empty_index(index: Index, kind: type[Index]) -> None:
    rows, known = index.lookup([])
    assert len(rows) == 0
    assert len(known) == 0
    empty = kind(np.array([], dtype=np.str_))
    assert empty.get("u1") is None
    rows, known = empty.lookup(["u1", "u2"])
    assert len(rows) == 0
    assert known.tolist() == [False, False]


def test_ids_longer_than_any_known_id_are_not_mistaken_for_a_prefix(kind: type[Index]) -> None:
    index = kind(np.array(["ab", "abc"]))
    assert index.get("abcd") is None
    rows, known = index.lookup(["abcd", "abc", "ab"])
    assert known.tolist() == [False, True, True]
    assert rows.tolist() == [1, 0]
