"""Experiments' pure parts: assignment, the always-valid test, the decisions, the request."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from recsys_shared import keys
from recsys_shared.experiments import decision
from recsys_shared.experiments.assignment import assign, bucket
from recsys_shared.experiments.report import build_report
from recsys_shared.experiments.statistics import Sample, difference, versus_control, wilson
from recsys_shared.experiments.store import Counters
from recsys_shared.schemas import (
    MIN_TRIALS,
    Decision,
    ExperimentIn,
    ExperimentState,
    ExperimentStep,
    StoredExperiment,
)
from recsys_shared.testing.experiments import keen_users_verdict

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


# ── assignment ──────────────────────────────────────────────────────────────────────────
def test_assignment_is_sticky_and_within_three_points_of_the_weights() -> None:
    shares = [0.5, 0.3, 0.2]
    users = [f"user-{n}" for n in range(10_000)]
    first = [assign("7", user, shares) for user in users]
    assert first == [assign("7", user, shares) for user in users]  # the same every time
    counts = np.bincount(first, minlength=3) / len(users)
    assert np.all(np.abs(counts - shares) <= 0.03), counts


def test_another_experiment_shuffles_the_users() -> None:
    users = [f"user-{n}" for n in range(2_000)]
    a = [assign("1", user, [0.5, 0.5]) for user in users]
    b = [assign("2", user, [0.5, 0.5]) for user in users]
    agreement = sum(x == y for x, y in zip(a, b, strict=True)) / len(users)
    assert 0.4 < agreement < 0.6  # independent, not the same split again


def test_a_growing_canary_only_takes_users_from_the_control() -> None:
    users = [f"user-{n}" for n in range(5_000)]
    steps = [[0.95, 0.05], [0.75, 0.25], [0.5, 0.5]]
    for before, after in itertools.pairwise(steps):
        for user in users:
            if assign("3", user, before) == 1:
                assert assign("3", user, after) == 1  # a canary user stays on the canary


def test_buckets_are_uniform() -> None:
    positions = np.array([bucket("9", f"u{n}") for n in range(20_000)])
    histogram, _ = np.histogram(positions, bins=10, range=(0, 1))
    assert histogram.min() > 1_800
    assert histogram.max() < 2_200


# ── the always-valid test ───────────────────────────────────────────────────────────────
def _monitored(rng: np.random.Generator, *rates: float, users: int = 20_000) -> str:
    """Users split evenly at random over variants with these rates (the first the control),
    checked after every 50 as the decider checks: the first verdict on any treatment."""
    arms = rng.integers(len(rates), size=users)
    successes = rng.random(users) < np.asarray(rates)[arms]
    served = arms[:, None] == np.arange(len(rates))
    trials, wins = np.cumsum(served, axis=0), np.cumsum(served & successes[:, None], axis=0)
    for end in range(99, users, 50):
        control = Sample.of(int(wins[end, 0]), int(trials[end, 0]))
        for arm in range(1, len(rates)):
            treatment = Sample.of(int(wins[end, arm]), int(trials[end, arm]))
            found = versus_control(
                [(control, treatment)], treatments=len(rates) - 1, tau=0.05, alpha=0.05
            )
            if found is not None and found.verdict != "undecided":
                return found.verdict
    return "undecided"


def test_checked_every_fifty_users_an_a_a_test_rarely_decides() -> None:
    rng = np.random.default_rng(7)
    runs = [_monitored(rng, 0.1, 0.1) for _ in range(150)]
    false_decisions = sum(verdict != "undecided" for verdict in runs) / len(runs)
    # alpha is 5% however often it is checked; a naive z-test checked 400 times is far above.
    assert false_decisions <= 0.08, false_decisions


def test_several_treatments_share_alpha() -> None:
    # Four treatments no better than the control, each compared at alpha: some treatment is
    # wrongly declared in about 10% of runs. Sharing alpha among them keeps it under 5%.
    rng = np.random.default_rng(11)
    runs = [_monitored(rng, 0.1, 0.1, 0.1, 0.1, 0.1) for _ in range(200)]
    false_decisions = sum(verdict != "undecided" for verdict in runs) / len(runs)
    assert false_decisions <= 0.06, false_decisions


def test_a_real_difference_is_found_in_the_right_direction() -> None:
    rng = np.random.default_rng(8)
    assert [_monitored(rng, 0.3, 0.1) for _ in range(20)] == ["worse"] * 20
    assert [_monitored(rng, 0.1, 0.2) for _ in range(20)] == ["better"] * 20


def test_keen_users_do_not_make_an_a_a_test_decide() -> None:
    # A keen user's lists rise and fall together: taken as independent trials, the intervals
    # are far too narrow and half of these A/A tests declare a difference.
    rng = np.random.default_rng(5)
    as_trials = [keen_users_verdict(rng, 0.1, 0.1, grouped=False) for _ in range(100)]
    assert sum(verdict != "undecided" for verdict in as_trials) >= 30
    # With the user as the unit (counts per group of users), alpha holds.
    by_users = [keen_users_verdict(rng, 0.1, 0.1) for _ in range(200)]
    false_decisions = sum(verdict != "undecided" for verdict in by_users) / len(by_users)
    assert false_decisions <= 0.06, false_decisions
    # And a real difference is still found, in the right direction.
    assert [keen_users_verdict(rng, 0.1, 0.2) for _ in range(10)] == ["better"] * 10


def test_grouped_counts_of_one_trial_per_user_are_binomial() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(keys.VARIANT_GROUPS, size=5_000)
    successes = rng.random(5_000) < 0.2
    trials = np.bincount(groups, minlength=keys.VARIANT_GROUPS)
    wins = np.bincount(groups, weights=successes, minlength=keys.VARIANT_GROUPS)
    grouped = Sample.grouped(wins.astype(int).tolist(), trials.tolist())
    binomial = Sample.of(int(successes.sum()), 5_000)
    assert (grouped.successes, grouped.trials) == (binomial.successes, binomial.trials)
    assert binomial.variance <= grouped.variance < 1.5 * binomial.variance


def test_a_rates_interval_widens_as_much_as_its_variance() -> None:
    independent = Sample.of(100, 1000)
    assert independent.interval() == wilson(100, 1000)
    keen = Sample(100, 1000, 4 * independent.variance)  # as if each user had four lists
    low, high = keen.interval()  # type: ignore[misc]
    assert low < 0.1 < high
    alone_low, alone_high = wilson(100, 1000)  # type: ignore[misc]
    assert high - low == pytest.approx(2 * (alone_high - alone_low), rel=0.1)
    assert Sample.of(0, 0).interval() is None


def test_a_report_widens_the_rate_of_a_variant_with_keen_users() -> None:
    values = {}
    for number in range(keys.VARIANT_GROUPS):  # 20 lists per group; only 8 groups click
        values[keys.variant_counter("control", number, keys.VARIANT_EXPOSURES)] = 20
        values[keys.variant_counter("control", number, keys.VARIANT_CLICKS)] = 20 * (number < 8)
    report = build_report(_experiment("canary", CANARY), Counters(values), tau=0.05, alpha=0.05)
    interval = report.variants[0].interval
    assert interval is not None
    low, high = wilson(160, 1280)  # type: ignore[misc]
    assert interval.high - interval.low > 3 * (high - low)


def test_no_verdict_below_the_minimum_trials() -> None:
    few, enough = Sample.of(0, MIN_TRIALS - 1), Sample.of(0, MIN_TRIALS)
    clicked_every_list = Sample.of(200, 200)
    assert difference(few, clicked_every_list).verdict == "better"  # type: ignore[union-attr]
    below = versus_control([(few, clicked_every_list)], treatments=1, tau=0.05, alpha=0.05)
    assert below is not None
    assert below.verdict == "undecided"
    assert below.low > 0  # the interval is still reported
    at = versus_control([(enough, clicked_every_list)], treatments=1, tau=0.05, alpha=0.05)
    assert at is not None
    assert at.verdict == "better"


def test_a_shared_alpha_widens_each_interval_and_says_so() -> None:
    control, treatment = Sample.of(100, 1000), Sample.of(140, 1000)
    alone = versus_control([(control, treatment)], treatments=1, tau=0.05, alpha=0.05)
    one_of_four = versus_control([(control, treatment)], treatments=4, tau=0.05, alpha=0.05)
    assert alone is not None
    assert one_of_four is not None
    assert one_of_four.low < alone.low < alone.high < one_of_four.high
    assert (alone.level, one_of_four.level) == ("95%", "98.8%")


def test_wilson_interval_holds_the_rate() -> None:
    low, high = wilson(30, 100)  # type: ignore[misc]
    assert low < 0.3 < high
    assert wilson(0, 0) is None
    assert wilson(0, 10)[0] == 0.0  # type: ignore[index]


# ── decisions ───────────────────────────────────────────────────────────────────────────
def _experiment(mode: str, variants: list[dict[str, object]], **extra: object) -> StoredExperiment:
    definition = ExperimentIn.model_validate(
        {"name": "t", "mode": mode, "variants": variants, "min_exposures": 100, **extra}
    )
    shares = definition.shares()
    return StoredExperiment(
        id="5",
        created_at=NOW - timedelta(minutes=5),
        definition=definition,
        state=ExperimentState(
            shares=shares,
            step_started_exposures=[0] * len(shares),
            steps=[ExperimentStep(at=NOW, shares=shares, note="started")],
        ),
    )


def _counters(**figures: tuple[int, int]) -> Counters:
    """variant=(exposures, clicks)."""
    values: dict[str, int] = {}
    for name, (exposures, clicks) in figures.items():
        values[name + keys.VARIANT_EXPOSURES] = exposures
        values[name + keys.VARIANT_CLICKS] = clicks
    return Counters(values)


CANARY = [{"model_version": 1}, {"model_version": 2}]


def _decide(stored: StoredExperiment, counters: Counters) -> decision.Outcome | None:
    return decision.decide(stored, counters, now=NOW, tau=0.05, alpha=0.05)


def test_a_canary_steps_up_while_not_worse_then_is_promoted() -> None:
    stored = _experiment("canary", CANARY)
    assert stored.state.shares == [0.95, 0.05]
    assert _decide(stored, _counters(control=(1900, 380), canary=(99, 20))) is None  # too few
    shares_seen = []
    exposures = [0, 0]
    for _ in range(3):
        exposures = [exposures[0] + 1000, exposures[1] + 150]
        counters = _counters(
            control=(exposures[0], exposures[0] // 5), canary=(exposures[1], exposures[1] // 5)
        )
        outcome = _decide(stored, counters)
        assert outcome is not None
        stored = stored.model_copy(update={"state": outcome.state})
        shares_seen.append(outcome.state.shares[1])
    assert shares_seen == [0.25, 0.5, 1.0]
    assert outcome.state.decision is Decision.PROMOTED
    assert outcome.activate == 2
    assert [step.note.split()[0] for step in outcome.state.steps] == [
        "started",
        "canary",
        "canary",
        "promoted:",
    ]


def test_a_canary_is_compared_within_each_step_not_across_a_drifting_metric() -> None:
    # The click rate falls from 30% to 20% to 10% while the canary's share grows, the same for
    # both: pooled, the canary's lists are mostly from the late, low hours and it looks worse.
    stored = _experiment("canary", CANARY)
    steps = {  # (lists, clicks) in each of the three steps
        "control": [(1900, 570), (750, 150), (1000, 100)],
        "canary": [(100, 30), (250, 50), (1000, 100)],
    }
    marks: list[dict[str, tuple[int, int]]] = []
    for end in (1, 2):  # the counts saved as the 25% and the 50% steps began
        marks.append(
            {
                name: (sum(c for _, c in periods[:end]), sum(n for n, _ in periods[:end]))
                for name, periods in steps.items()
            }
        )
    at_half = stored.state.model_copy(
        update={"shares": [0.5, 0.5], "step_started_exposures": [2650, 350], "step_counts": marks}
    )
    totals = _counters(
        **{name: (sum(n for n, _ in p), sum(c for _, c in p)) for name, p in steps.items()}
    )

    pooled = _decide(
        stored.model_copy(update={"state": at_half.model_copy(update={"step_counts": []})}), totals
    )
    assert pooled is not None
    assert pooled.state.decision is Decision.ROLLED_BACK  # what pooling across steps did
    within = _decide(stored.model_copy(update={"state": at_half}), totals)
    assert within is not None
    assert within.state.decision is Decision.PROMOTED  # not worse at any step: promoted
    assert "difference +0.0000" in within.state.reason


def test_a_canary_step_saves_the_counts_it_began_with() -> None:
    stored = _experiment("canary", CANARY)
    outcome = _decide(stored, _counters(control=(1900, 380), canary=(100, 20)))
    assert outcome is not None
    assert outcome.state.shares == [0.75, 0.25]
    assert outcome.state.step_counts == [{"control": (380, 1900), "canary": (20, 100)}]


def test_a_worse_canary_is_rolled_back_at_once() -> None:
    stored = _experiment("canary", CANARY)
    outcome = _decide(stored, _counters(control=(2000, 600), canary=(60, 2)))
    assert outcome is not None
    assert outcome.state.decision is Decision.ROLLED_BACK
    assert outcome.activate is None
    assert outcome.state.shares == [1.0, 0.0]
    assert "significantly worse" in outcome.state.reason


def test_ab_promotes_the_significantly_better_treatment() -> None:
    stored = _experiment(
        "ab",
        [
            {"model_version": 1, "weight": 0.34},
            {"model_version": 2, "weight": 0.33},
            {"model_version": 3, "weight": 0.33},
        ],
    )
    undecided = _counters(control=(900, 90), **{"treatment-1": (900, 95), "treatment-2": (90, 9)})
    assert _decide(stored, undecided) is None  # treatment-2 has too few exposures
    outcome = _decide(
        stored,
        _counters(control=(3000, 300), **{"treatment-1": (3000, 310), "treatment-2": (3000, 600)}),
    )
    assert outcome is not None
    assert outcome.state.decision is Decision.PROMOTED
    assert outcome.activate == 3
    assert outcome.state.shares == [0.0, 0.0, 1.0]


def test_decisions_and_reports_share_alpha_among_the_treatments() -> None:
    two = _experiment(
        "ab", [{"model_version": 1, "weight": 0.5}, {"model_version": 2, "weight": 0.5}]
    )
    three = _experiment(
        "ab",
        [
            {"model_version": 1, "weight": 0.34},
            {"model_version": 2, "weight": 0.33},
            {"model_version": 3, "weight": 0.33},
        ],
    )
    # 380 clicks in 3,000 lists against 300: significantly better at 95%, not at 97.5%.
    alone = _counters(control=(3000, 300), **{"treatment-1": (3000, 380)})
    beside = _counters(
        control=(3000, 300), **{"treatment-1": (3000, 380), "treatment-2": (3000, 300)}
    )
    outcome = _decide(two, alone)
    assert outcome is not None
    assert outcome.activate == 2
    assert "always-valid 95% interval" in outcome.state.reason
    assert _decide(three, beside) is None
    report = build_report(three, beside, tau=0.05, alpha=0.05)
    assert [variant.verdict for variant in report.variants] == ["", "undecided", "undecided"]
    assert build_report(two, alone, tau=0.05, alpha=0.05).variants[1].verdict == "better"


def test_a_report_gives_no_verdict_below_the_minimum_trials() -> None:
    stored = _experiment("canary", CANARY)
    few = _counters(control=(MIN_TRIALS - 1, 0), canary=(MIN_TRIALS - 1, MIN_TRIALS - 1))
    canary = build_report(stored, few, tau=0.05, alpha=0.05).variants[1]
    assert canary.difference_interval is not None
    assert canary.difference_interval.low > 0
    assert canary.verdict == "undecided"
    assert _decide(stored, few) is None


def test_an_experiment_past_its_duration_is_inconclusive() -> None:
    stored = _experiment("shadow", CANARY, max_duration_seconds=60)
    outcome = _decide(stored, _counters(control=(10, 1)))
    assert outcome is not None
    assert outcome.state.decision is Decision.INCONCLUSIVE
    assert outcome.state.ended_at == NOW


# ── the request ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    ("mode", "variants", "message"),
    [
        ("ab", [{"model_version": 1, "weight": 0.5}, {"model_version": 2, "weight": 0.6}], "sum"),
        ("ab", [{"model_version": 1, "weight": 1.0}, {"model_version": 2}], "weight above 0"),
        ("ab", [{"model_version": 1, "weight": 0.5}, {"model_version": 1, "weight": 0.5}], "diff"),
        ("canary", [{"model_version": 1}, {"model_version": 2, "weight": 1.0}], "below 1"),
        ("shadow", [{"model_version": 1}, {"model_version": 2, "weight": 0}], "above 0"),
        ("shadow", [{"model_version": 1}], "at least 2"),
        ("canary", [{"model_version": 1}, {"model_version": 2}, {"model_version": 3}], "exactly"),
    ],
)
def test_invalid_variants_name_the_field(
    mode: str, variants: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        ExperimentIn.model_validate({"name": "x", "mode": mode, "variants": variants})
    (error,) = raised.value.errors()
    assert error["loc"][0] == "variants"
    assert message in error["msg"]


def test_shares_per_mode() -> None:
    canary = ExperimentIn.model_validate({"name": "c", "mode": "canary", "variants": CANARY})
    shadow = ExperimentIn.model_validate(
        {
            "name": "s",
            "mode": "shadow",
            "variants": [CANARY[0], {"model_version": 2, "weight": 0.3}],
        }
    )
    assert canary.shares() == [0.95, 0.05]
    assert shadow.shares() == [1.0, 0.3]  # the control serves every list
