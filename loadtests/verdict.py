"""The SLO verdict: a ``quitting`` listener that sets ``environment.process_exit_code``.

As Locust's documentation shows for pass/fail criteria: when Locust quits, the checks of
``slo.py`` run on ``environment.stats`` (the master's merged statistics in a distributed run)
and on the journeys' fallback counts; the exit code is 0 when every gated objective is met and
1 when one is missed. The verdict is printed on ``quit``, after Locust's own summary tables, so
it is the last thing a run says. The limits are Locust options with their variables
(``--slo-p99-ms`` or ``SLO_P99_MS``…), shown by ``locust --help``.
"""

# mypy: disallow-untyped-decorators=False
# (Locust's EventHook.add_listener is untyped; its documented form is the decorator.)

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import replace
from typing import Any

from fallbacks import OUTCOMES
from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import WorkerRunner
from resilience import Fault, FaultScript, ResilienceShape
from slo import (
    Check,
    Limits,
    failure_ratio,
    fallback_ratio,
    latency,
    load_checks,
    missed,
    no_server_errors,
    p99_series,
    p99_spike,
    render,
)

log = logging.getLogger("recsys.verdict")

EXIT_MET = 0
EXIT_MISSED = 1
#: The verdict of the last run, as printed (kept for whoever embeds Locust, and for tests).
LAST_VERDICT: list[str] = []


def _limit(text: str) -> float:
    try:
        number = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from error
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return number


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("recsys SLOs (a miss exits 1 and says by how much)")
    defaults = Limits()
    for name, unit in (
        ("failure_ratio", "failed requests / all requests"),
        ("p95_ms", "p95 latency of all requests, ms"),
        ("p99_ms", "p99 latency of all requests, ms"),
        ("fallback_ratio", "known-user lists not personalised / all known-user lists"),
    ):
        option = "--slo-" + name.replace("_", "-")
        variable = f"SLO_{name.upper()}"
        default = getattr(defaults, name)
        group.add_argument(option, type=_limit, default=default, env_var=variable, help=unit)


def limits(options: Any) -> Limits:
    """The limits from Locust's parsed options; the defaults where one is absent."""
    defaults = Limits()
    values = {
        name: getattr(options, f"slo_{name}", getattr(defaults, name))
        for name in ("failure_ratio", "p95_ms", "p99_ms", "fallback_ratio")
    }
    return Limits(**values)


def resilience_checks(environment: Environment, script: FaultScript) -> list[Check]:
    """Gated: each fault injected and recovered, no 5xx, the failure ratio. Reported: latency
    and fallbacks (a spike and the designed degradation are expected here) and the p99 spike."""
    stats, chosen = environment.stats, limits(environment.parsed_options)
    faults = script.faults
    checks = [Check(fault.label, fault.ok, fault.outcome) for fault in faults]
    if len(faults) < 2:
        checks.append(Check("faults", False, f"{len(faults)} of 2 faults injected"))
    checks += [no_server_errors(stats), failure_ratio(stats, chosen.failure_ratio)]
    fallen, lists = OUTCOMES.known_user_lists()
    reported = [
        latency(stats, 0.95, chosen.p95_ms),
        latency(stats, 0.99, chosen.p99_ms),
        fallback_ratio(fallen, lists, chosen.fallback_ratio),
    ]
    checks += [replace(check, gated=False) for check in reported]
    if faults:
        checks.append(spike_check(environment, script, faults))
    return checks


def spike_check(environment: Environment, script: FaultScript, faults: list[Fault]) -> Check:
    """The p99 of Locust's 10 s window: median over the baseline (after a warm-up) against
    the maximum from the first fault until 10 s after the last, and per fault."""
    series = p99_series(environment.stats.history)
    steady = (script.started + min(15.0, script.baseline / 3), faults[0].start)
    spike = p99_spike(series, steady, (faults[0].start, max(f.end for f in faults) + 10))
    per_fault = ", ".join(
        f"{fault.label} {p99_spike(series, steady, (fault.start, fault.end + 10)).max_p99_ms:.0f}"
        f" ms (at {fault.start - script.started:.0f}-{fault.end - script.started:.0f} s)"
        for fault in faults
    )
    message = (
        f"steady p99 {spike.steady_p99_ms:.0f} ms before the faults, max {spike.max_p99_ms:.0f} "
        f"ms during them ({spike.increase_ms:+.0f} ms, {spike.factor:.1f}x); {per_fault}"
    )
    return Check("p99 spike", True, message, gated=False)


def checks_for(environment: Environment) -> list[Check]:
    """The checks of the scenario this run is: resilience when its shape ran, else load."""
    shape = environment.shape_class
    if isinstance(shape, ResilienceShape) and shape.script is not None:
        checks = resilience_checks(environment, shape.script)
    else:
        fallen, lists = OUTCOMES.known_user_lists()
        checks = load_checks(environment.stats, limits(environment.parsed_options), fallen, lists)
    runner = environment.runner
    if raised := sum(row["count"] for row in runner.exceptions.values()) if runner else 0:
        checks.append(Check("exceptions", False, f"the journeys raised {raised} exceptions"))
    return checks


def notes() -> list[str]:
    return [
        f"lists with fallback_reason {reason}: {count}"
        for reason, count in OUTCOMES.reasons().items()
    ]


@events.quitting.add_listener
def check_slos(environment: Environment, **_: Any) -> None:
    """Decide the run: exit 0 when every gated objective is met, 1 when one is missed."""
    if isinstance(environment.runner, WorkerRunner):
        return  # the master holds the merged statistics and decides
    checks = checks_for(environment)
    environment.process_exit_code = EXIT_MISSED if missed(checks) else EXIT_MET
    LAST_VERDICT[:] = render(checks, notes()).splitlines()


@events.quit.add_listener
def print_verdict(**_: Any) -> None:
    """Say the verdict after Locust's own summary tables, so that it is the last word."""
    for line in LAST_VERDICT:
        (log.error if line.startswith(("FAIL", "SLO MISSED")) else log.info)("%s", line)
