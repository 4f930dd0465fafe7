"""An experiment's report: each variant's counts, its rate with an interval, and how it
compares with the control (see ``statistics``). The samples it compares (``sample``,
``strata``) are the ones the decider compares, so a report shows the verdict it acts on."""

from __future__ import annotations

from recsys_shared import keys
from recsys_shared.experiments.statistics import Sample, Stratum, rate, versus_control
from recsys_shared.experiments.store import Counters, variant_names
from recsys_shared.schemas import (
    Experiment,
    ExperimentMetric,
    ExperimentMode,
    Interval,
    ShadowReport,
    StoredExperiment,
    VariantReport,
)


def sample(metric: ExperimentMetric, counters: Counters, variant: str) -> Sample:
    """What the metric counts as a success, out of what, per group of the variant's users."""
    clicks = counters.groups(variant, keys.VARIANT_CLICKS)
    if metric is ExperimentMetric.HIT_RATE:
        return Sample.grouped(clicks, counters.groups(variant, keys.VARIANT_EVENTS))
    exposures = counters.groups(variant, keys.VARIANT_EXPOSURES)
    if metric is ExperimentMetric.CONVERSION:
        return Sample.grouped(counters.groups(variant, keys.VARIANT_CONVERSIONS), exposures)
    return Sample.grouped(clicks, exposures)


#: A variant → its metric's (successes, trials) at some moment.
Counts = dict[str, tuple[int, int]]


def counts(stored: StoredExperiment, counters: Counters) -> Counts:
    """Every variant's metric counts now (saved as a canary steps up)."""
    names = variant_names(stored.definition.mode, len(stored.definition.variants))
    samples = {name: sample(stored.definition.metric, counters, name) for name in names}
    return {name: (own.successes, own.trials) for name, own in samples.items()}


def strata(stored: StoredExperiment, counters: Counters, name: str) -> list[Stratum]:
    """The control and the variant ``name`` over the same stretches of time: a canary's steps
    (from the counts saved as each began), else the whole experiment as one."""
    definition = stored.definition
    metric = definition.metric
    control_name = variant_names(definition.mode, len(definition.variants))[0]
    control, own = sample(metric, counters, control_name), sample(metric, counters, name)
    if definition.mode is not ExperimentMode.CANARY:
        return [(control, own)]
    now = {control_name: (control.successes, control.trials), name: (own.successes, own.trials)}
    steps: list[Stratum] = []
    before: Counts = {}  # nothing before the first step
    for mark in [*stored.state.step_counts, now]:
        steps.append((_since(control, before, mark, control_name), _since(own, before, mark, name)))
        before = mark
    return steps


def _since(whole: Sample, before: Counts, after: Counts, name: str) -> Sample:
    (s_before, n_before), (s_after, n_after) = before.get(name, (0, 0)), after.get(name, (0, 0))
    return whole.part(s_after - s_before, n_after - n_before)


def build_report(
    stored: StoredExperiment, counters: Counters, *, tau: float, alpha: float
) -> Experiment:
    definition, state = stored.definition, stored.state
    names = variant_names(definition.mode, len(definition.variants))
    served = names[:1] if definition.mode is ExperimentMode.SHADOW else names
    variants = []
    for index, name in enumerate(served):
        own = sample(definition.metric, counters, name)
        interval = own.interval()
        versus = (
            versus_control(
                strata(stored, counters, name), treatments=len(served) - 1, tau=tau, alpha=alpha
            )
            if index
            else None
        )
        variants.append(
            VariantReport(
                name=name,
                model_version=definition.variants[index].model_version,
                share=state.shares[index],
                exposures=counters.get(name, keys.VARIANT_EXPOSURES),
                events=counters.get(name, keys.VARIANT_EVENTS),
                clicks=counters.get(name, keys.VARIANT_CLICKS),
                conversions=counters.get(name, keys.VARIANT_CONVERSIONS),
                rate=rate(own.successes, own.trials),
                interval=Interval(low=interval[0], high=interval[1]) if interval else None,
                difference=versus.value if versus else None,
                difference_interval=Interval(low=versus.low, high=versus.high) if versus else None,
                verdict=versus.verdict if versus else "",
            )
        )
    return Experiment(
        id=stored.id,
        name=definition.name,
        mode=definition.mode,
        metric=definition.metric,
        decision=state.decision,
        reason=state.reason,
        min_exposures=definition.min_exposures,
        max_duration_seconds=definition.max_duration_seconds,
        created_at=stored.created_at,
        ended_at=state.ended_at,
        variants=variants,
        shadow=_shadow(stored, counters, names)
        if definition.mode is ExperimentMode.SHADOW
        else None,
        steps=state.steps,
    )


def _shadow(stored: StoredExperiment, counters: Counters, names: list[str]) -> ShadowReport:
    shadow = names[1]
    rankings = counters.get(shadow, keys.VARIANT_EXPOSURES)
    overlap = counters.get(shadow, keys.SHADOW_OVERLAP)
    events, hits = (
        counters.get(shadow, keys.VARIANT_EVENTS),
        counters.get(shadow, keys.VARIANT_CLICKS),
    )
    return ShadowReport(
        model_version=stored.definition.variants[1].model_version,
        share=stored.state.shares[1],
        rankings=rankings,
        # Overlaps are summed in thousandths: a counter holds integers.
        overlap=overlap / 1000 / rankings if rankings else None,
        events=events,
        hits=hits,
        hit_rate=rate(hits, events),
    )
