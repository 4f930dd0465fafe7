"""The one figure Locust's statistics cannot hold: which strategy answered each list.

A fallback (a known user's list that is not ``personalized``, e.g. ``popular`` with
``fallback_reason: recommender_unavailable``) is a 200, so Locust counts it as a success. The
journeys record every list's outcome here; in a distributed run each worker sends its counts
with its regular report and the master merges them (Locust's documented way for custom
statistics: ``report_to_master`` and ``worker_report``).
"""

# mypy: disallow-untyped-decorators=False
# (Locust's EventHook.add_listener is untyped; its documented form is the decorator.)

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from locust import events

PERSONALIZED = "personalized"
KNOWN_USER = "known_user"
_REPORT_KEY = "recsys_lists"


@dataclass
class ListOutcomes:
    """Lists received, counted by ``"kind|strategy/fallback_reason"`` (``-`` for no reason)."""

    counts: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, strategy: str, reason: str | None) -> None:
        self.counts[f"{kind}|{strategy}/{reason or '-'}"] += 1

    def drain(self) -> dict[str, int]:
        """What was counted since the last drain (what a worker sends to the master)."""
        counts, self.counts = dict(self.counts), Counter()
        return counts

    def merge(self, counts: dict[str, int] | None) -> None:
        self.counts.update(counts or {})

    def known_user_lists(self) -> tuple[int, int]:
        """(known-user lists not personalised, all known-user lists)."""
        fallen = total = 0
        for key, count in self.counts.items():
            kind, _, outcome = key.partition("|")
            if kind == KNOWN_USER:
                total += count
                fallen += 0 if outcome.startswith(PERSONALIZED + "/") else count
        return fallen, total

    def reasons(self) -> dict[str, int]:
        """Lists with a ``fallback_reason``, by ``"kind/reason"``, of every kind."""
        found: Counter[str] = Counter()
        for key, count in self.counts.items():
            kind, _, outcome = key.partition("|")
            reason = outcome.partition("/")[2]
            if reason != "-":
                found[f"{kind}/{reason}"] += count
        return dict(sorted(found.items()))


OUTCOMES = ListOutcomes()


@events.test_start.add_listener
def _reset(**_: Any) -> None:
    OUTCOMES.drain()


@events.report_to_master.add_listener  # on each worker
def _send(data: dict[str, Any], **_: Any) -> None:
    data[_REPORT_KEY] = OUTCOMES.drain()


@events.worker_report.add_listener  # on the master
def _merge(data: dict[str, Any], **_: Any) -> None:
    OUTCOMES.merge(data.get(_REPORT_KEY))
