"""The statistics that decide an experiment, valid however often they are looked at.

Each variant's rate gets a Wilson 95% interval (for reading, on the effective trials). The
difference of a treatment's rate from the control's gets an *always-valid* confidence
sequence: the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh
("Always valid inference", 2017) with a normal mixture N(0, tau²) over the difference.
Checked after every exposure if one likes, the probability that the sequence ever excludes
the true difference is at most alpha: declaring "better" or "worse" only when the whole
sequence lies above or below 0 keeps the false-decision rate at alpha (5% by default) under
continuous monitoring, where a fixed-sample test checked repeatedly would exceed it many
times over. The variances are plugged in from the observed counts, with users as the unit
(``Sample.grouped``), in the usual large-sample approximation (hence ``MIN_TRIALS``; a
decision also needs ``min_exposures`` per variant). Several treatments share alpha
(Bonferroni): each is compared at alpha / their number, so the chance that *any* of them is
ever wrongly declared better or worse stays at most alpha, checked as often as one likes (a
union bound holds at every time at once, as the sequences do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from recsys_shared.schemas import MIN_TRIALS

Z_95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Difference:
    value: float
    low: float
    high: float
    alpha: float
    enough_trials: bool = True

    @property
    def verdict(self) -> str:
        if not self.enough_trials:
            return "undecided"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "undecided"

    @property
    def level(self) -> str:
        """The sequence's confidence, for reading: "95%", or "98.3%" for one of three."""
        return f"{(1 - self.alpha) * 100:.3g}%"


def rate(successes: int, trials: int) -> float | None:
    return min(successes / trials, 1.0) if trials > 0 else None


def wilson(successes: float, trials: float, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion."""
    if trials <= 0:
        return None
    p = min(successes / trials, 1.0)
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(centre - spread, 0.0), min(centre + spread, 1.0)


def _variance(successes: int, trials: int) -> float:
    # Smoothed, so that 0 or all successes still carry the uncertainty of a few trials.
    p = (min(successes, trials) + 0.5) / (trials + 1)
    return p * (1 - p) / trials


@dataclass(frozen=True, slots=True)
class Sample:
    """A variant's successes out of trials, and the variance of their ratio."""

    successes: int
    trials: int
    variance: float

    @classmethod
    def of(cls, successes: int, trials: int) -> Sample:
        """Every trial independent of the others (binomial)."""
        return cls(successes, trials, _variance(successes, trials) if trials > 0 else 0.0)

    @classmethod
    def grouped(cls, successes: Sequence[int], trials: Sequence[int]) -> Sample:
        """Counts per group of users (a user's trials all in one group): the variance with
        the user, not the trial, as the unit. A user's lists and clicks go together (a keen
        user clicks on many), so trials are not independent and the binomial variance is too
        small; the delta method over the groups' totals is not fooled by that. Never below
        the binomial variance, which it matches when every user has one trial."""
        binomial = cls.of(sum(successes), sum(trials))
        groups = len(trials)
        if binomial.trials <= 0 or groups < 2:
            return binomial
        # Plain Python over a few dozen groups: the gateway, which decides, has no numpy.
        rate = binomial.successes / binomial.trials
        squares = math.fsum(
            (hits - rate * tries) ** 2 for hits, tries in zip(successes, trials, strict=True)
        )
        spread = groups / (groups - 1) * squares / binomial.trials**2
        return replace(binomial, variance=max(binomial.variance, spread))

    def interval(self, z: float = Z_95) -> tuple[float, float] | None:
        """The rate's Wilson interval on the effective number of trials (Kish's): the trials
        shrunk by as much as counting users, not lists, widened the variance."""
        if self.trials <= 0:
            return None
        shrink = _variance(self.successes, self.trials) / self.variance
        return wilson(min(self.successes, self.trials) * shrink, self.trials * shrink, z)

    def part(self, successes: int, trials: int) -> Sample:
        """Some of these counts (a canary step's), their variance widened as much as the
        whole's is over the binomial (the design effect of counting users, not lists)."""
        binomial = Sample.of(successes, trials)
        if self.trials <= 0:
            return binomial
        design_effect = self.variance / _variance(self.successes, self.trials)
        return replace(binomial, variance=binomial.variance * design_effect)


#: A control's and a treatment's samples over the same stretch of time.
Stratum = tuple[Sample, Sample]


def difference(
    control: Sample,
    treatment: Sample,
    *,
    tau: float = 0.05,
    alpha: float = 0.05,
) -> Difference | None:
    """The treatment's rate minus the control's, with its always-valid (1 - alpha) confidence
    sequence."""
    return stratified([(control, treatment)], tau=tau, alpha=alpha)


def stratified(
    strata: Sequence[Stratum], *, tau: float = 0.05, alpha: float = 0.05
) -> Difference | None:
    """The difference within each stratum (a canary's step), combined with the weights
    n_c·n_t / (n_c + n_t) of each stratum's trials, and its always-valid (1 - alpha) sequence.
    Compared only within a stratum, a metric that drifts over time while the shares change
    (the canary's grows) is not taken for a difference between the variants; with one stratum
    this is the plain difference of the two rates."""
    usable = [(c, t) for c, t in strata if c.trials > 0 and t.trials > 0]
    if not usable:
        return None
    weights = [c.trials * t.trials / (c.trials + t.trials) for c, t in usable]
    total = sum(weights)
    value = sum(w * (_rate(t) - _rate(c)) for w, (c, t) in zip(weights, usable, strict=True))
    variance = sum(
        w * w * (c.variance + t.variance) for w, (c, t) in zip(weights, usable, strict=True)
    )
    value, variance = value / total, variance / total**2
    tau2 = tau * tau
    radius = math.sqrt(
        variance * (variance + tau2) / tau2
        * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance))
    )  # fmt: skip
    return Difference(value, value - radius, value + radius, alpha)


def _rate(sample: Sample) -> float:
    return min(sample.successes / sample.trials, 1.0)


def versus_control(
    strata: Sequence[Stratum],
    *,
    treatments: int,
    tau: float,
    alpha: float,
) -> Difference | None:
    """One of ``treatments`` treatments against the control, as decisions and reports read it
    (``strata``: one, or a canary's steps): its sequence at alpha / ``treatments``, and no
    verdict below ``MIN_TRIALS`` either side."""
    found = stratified(strata, tau=tau, alpha=alpha / max(treatments, 1))
    if found is None:
        return None
    control = sum(c.trials for c, _ in strata)
    treatment = sum(t.trials for _, t in strata)
    return replace(found, enough_trials=min(control, treatment) >= MIN_TRIALS)
