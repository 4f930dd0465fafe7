"""Which variant a user sees: a hash of (experiment, user), so the same user always lands in
the same bucket of the unit interval, in every gateway replica, without any state.

Treatments take the bottom of the interval, in order, and the control the rest: when a canary's
share grows, the users it already had keep it and new ones join (a user moves at most once,
from the control to the canary); fixed shares (A/B) never move anyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from recsys_shared import keys

_SCALE = float(2**64)


def _digest(experiment_id: str, user_id: str) -> int:
    digest = hashlib.blake2b(f"{experiment_id}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def bucket(experiment_id: str, user_id: str) -> float:
    """Where the user falls in [0, 1) for this experiment."""
    return _digest(experiment_id, user_id) / _SCALE


def group(experiment_id: str, user_id: str) -> int:
    """The group of users (of ``keys.VARIANT_GROUPS``) whose counters the user's lists and
    events add to: the digest's low bits, independent of the high bits that pick the variant,
    so each variant's users are spread evenly over the groups."""
    return _digest(experiment_id, user_id) % keys.VARIANT_GROUPS


def assign(experiment_id: str, user_id: str, shares: Sequence[float]) -> int:
    """The index of the variant the user sees; ``shares[0]`` is the control's."""
    position = bucket(experiment_id, user_id)
    edge = 0.0
    for index in range(1, len(shares)):
        edge += shares[index]
        if position < edge:
            return index
    return 0
