"""What the experiments' always-valid test costs and guarantees, simulated on its own code
(``recsys_shared.experiments.statistics``): the figures in docs/experiments.md.

- A/A: both variants convert at 10%; users alternate between them at random and the test is
  checked after every 50 (from ``MIN_TRIALS`` per variant on), up to 20,000 users. How often
  does it ever declare a difference? Beside it, a plain z-test checked as often.
- A/B: the control at 10%, the treatment at another rate: how many exposures (both variants,
  split evenly) until the verdict, and is it the right one?
- A/A of keen users (many lists each, click rates of their own): how often a difference is
  declared with users as the unit, as the system counts, and with lists taken as independent.

``.venv/bin/python scripts/experiment_sizes.py`` (about half a minute).
"""

from __future__ import annotations

import math

import numpy as np

from recsys_shared.experiments.statistics import Z_95, Sample, difference
from recsys_shared.schemas import MIN_TRIALS
from recsys_shared.testing.experiments import keen_users_verdict

CONTROL_RATE = 0.1


def first_verdict(
    rng: np.random.Generator, treatment_rate: float, *, users: int, every: int, naive: bool
) -> tuple[str, int]:
    """The first verdict of a test checked every ``every`` users, and when it came."""
    arms = rng.random(users) < 0.5
    successes = rng.random(users) < np.where(arms, treatment_rate, CONTROL_RATE)
    treated, treated_ok = np.cumsum(arms), np.cumsum(successes & arms)
    controls, controls_ok = np.cumsum(~arms), np.cumsum(successes & ~arms)
    for end in range(every, users + 1, every):
        control = (int(controls_ok[end - 1]), int(controls[end - 1]))
        treatment = (int(treated_ok[end - 1]), int(treated[end - 1]))
        if min(control[1], treatment[1]) < MIN_TRIALS:
            continue
        verdict = _z_test(control, treatment) if naive else _always_valid(control, treatment)
        if verdict != "undecided":
            return verdict, end
    return "undecided", users


def _always_valid(control: tuple[int, int], treatment: tuple[int, int]) -> str:
    compared = difference(Sample.of(*control), Sample.of(*treatment))
    return compared.verdict if compared is not None else "undecided"


def _z_test(control: tuple[int, int], treatment: tuple[int, int]) -> str:
    """A fixed-sample test, wrongly checked again and again."""
    (s_a, n_a), (s_b, n_b) = control, treatment
    p_a, p_b = s_a / n_a, s_b / n_b
    error = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b) or 1e-9
    z = (p_b - p_a) / error
    if abs(z) <= Z_95:
        return "undecided"
    return "better" if z > 0 else "worse"


def main() -> None:
    rng = np.random.default_rng(1)
    runs = 1000
    print(f"A/A at {CONTROL_RATE:.0%}, checked every 50 users up to 20,000, {runs} runs:")
    for naive, name in ((False, "always-valid (mSPRT)"), (True, "z-test checked as often")):
        verdicts = [
            first_verdict(rng, CONTROL_RATE, users=20_000, every=50, naive=naive)[0]
            for _ in range(runs)
        ]
        wrong = sum(verdict != "undecided" for verdict in verdicts) / runs
        print(f"  {name:<24} declared a difference in {wrong:.1%} of runs")
    print(f"\ncontrol at {CONTROL_RATE:.0%}, checked every 100 users, 100 runs each:")
    for rate in (0.05, 0.08, 0.12, 0.15, 0.2, 0.3):
        expected = "better" if rate > CONTROL_RATE else "worse"
        results = [
            first_verdict(rng, rate, users=100_000, every=100, naive=False) for _ in range(100)
        ]
        ends = [end for verdict, end in results if verdict != "undecided"]
        right = sum(verdict == expected for verdict, _ in results)
        print(
            f"  treatment at {rate:.0%}: right verdict in {right}/100, exposures to decide "
            f"median {np.median(ends):,.0f}, 90th percentile {np.percentile(ends, 90):,.0f}"
        )
    print("\nA/A of 3,000 keen users (11 lists each on average, click rates of their own about")
    print(f"{CONTROL_RATE:.0%}), checked every 100 users, {runs} runs:")
    for grouped, name in ((True, "users as the unit"), (False, "lists as independent")):
        verdicts = [
            keen_users_verdict(rng, CONTROL_RATE, CONTROL_RATE, grouped=grouped)
            for _ in range(runs)
        ]
        wrong = sum(verdict != "undecided" for verdict in verdicts) / runs
        print(f"  {name:<24} declared a difference in {wrong:.1%} of runs")


if __name__ == "__main__":
    main()
