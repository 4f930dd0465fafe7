"""Which variant a user sees: a hash of (experiment, user), so the same user always lands in
the same bucket of the unit interval, in every gateway replica, without any state.

Treatments take the bottom of the interval, in order, and the control the rest: when a canary's
share grows, the users it already had keep it and new ones join (a user moves at most once,
from the control to the canary); fixed shares (A/B) never move anyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SCALE = float(2**64)


def bucket(experiment_id: str, user_id: str) -> float:
    """Where the user falls in [0, 1) for this experiment."""
    digest = hashlib.blake2b(f"{experiment_id}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(experiment_id: str, user_id: str, shares: Sequence[float]) -> int:
    """The index of the variant the user sees; ``shares[0]`` is the control's."""
    position = bucket(experiment_id, user_id)
    edge = 0.0
    for index in range(1, len(shares)):
        edge += shares[index]
        if position < edge:
            return index
    return 0
