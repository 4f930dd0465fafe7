"""The pure parts of ``recsys_shared.data_move``: how a key is classified and what TTL a
restored key gets (the move itself runs on real Redis in tests/integration/test_data_move.py)."""

from __future__ import annotations

import pytest

from recsys_shared import keys
from recsys_shared.data_move import MoveRefused, _ttl, classify


@pytest.mark.parametrize(
    ("pttl", "restored"), [(-1, 0), (0, 1), (1, 1), (60_000, 60_000), (-2, None)]
)
def test_a_restored_key_keeps_its_expiry_and_one_about_to_expire_is_not_made_permanent(
    pttl: int, restored: int | None
) -> None:
    # -2: expired between its DUMP and its PTTL; restored without a TTL it would live forever.
    assert _ttl(pttl) == restored


def test_keys_are_classified_by_family() -> None:
    partition = keys.Partitions(4).of("ann")
    user = classify(partition.user_items("ann"))
    assert (user.kind, user.user) == ("user", "ann")
    assert classify(partition.users).kind == "users"
    assert classify(partition.stats).kind == "summed"
    assert classify(partition.events).kind == "transient"
    assert classify(keys.item("i1")).kind == "copied"
    assert classify(keys.TRAINING_LOCK).kind == "skipped"
    assert classify(keys.DATA_LAYOUT).kind == "skipped"
    with pytest.raises(MoveRefused):
        classify(partition.base + ":something-new")
