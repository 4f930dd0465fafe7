"""The ``quitting`` listener's verdict on a real Locust ``Environment``, options and events.

The options come from Locust's own parser (with the locustfile's ``init_command_line_parser``
listeners), the statistics from its ``RequestStats``, and the verdict is reached by firing
Locust's ``quitting`` and ``quit`` events, as Locust does when a run ends.
"""

from __future__ import annotations

import logging
from typing import Any

import locust
import pytest
import verdict
from api_client import Api
from fallbacks import OUTCOMES
from locust.argument_parser import get_parser
from locust.env import Environment
from locust_runs import (
    EVENTS,
    POPULAR,
    T0,
    Clock,
    fail,
    healthy_run,
    run_with_history,
    server_error,
)
from resilience import Fault, FaultScript, ResilienceShape


def environment(*args: str) -> Environment:
    """What Locust builds for ``locust -f loadtests/locustfile.py ARGS``."""
    options = get_parser(default_config_files=[]).parse_args(["-f", "locustfile.py", *args])
    return Environment(events=locust.events, parsed_options=options)


def quit_run(env: Environment) -> int | None:
    env.events.quitting.fire(environment=env, reverse=True)
    return env.process_exit_code


def known_user_lists(personalised: int, fallen: int) -> None:
    for _ in range(personalised):
        OUTCOMES.record("known_user", "personalized", None)
    for _ in range(fallen):
        OUTCOMES.record("known_user", "popular", "recommender_unavailable")


def test_a_healthy_run_exits_0() -> None:
    env = environment()
    healthy_run(env.stats)
    known_user_lists(personalised=100, fallen=0)

    assert quit_run(env) == 0
    assert verdict.LAST_VERDICT[-1] == "all SLOs met"


def test_slo_p99_ms_1_fails_the_run_and_says_by_how_much(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLO_P99_MS", "1")  # what `SLO_P99_MS=1 make loadtest` hands Locust
    env = environment()
    healthy_run(env.stats)

    assert quit_run(env) == 1
    assert verdict.LAST_VERDICT[-1].startswith(
        "SLO MISSED: p99 latency 240 ms is over SLO_P99_MS 1 ms by 239 ms, 240x the limit"
    )


def test_every_limit_is_an_option_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLO_FAILURE_RATIO", "0.2")
    env = environment("--slo-p95-ms", "30", "--slo-p99-ms", "300", "--slo-fallback-ratio", "0")

    assert verdict.limits(env.parsed_options) == verdict.Limits(0.2, 30.0, 300.0, 0.0)
    assert verdict.limits(environment().parsed_options) == verdict.Limits(0.2)


@pytest.mark.parametrize("value", ["fast", "-1", "nan"])
def test_a_limit_that_is_not_a_number_stops_locust(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        environment("--slo-p99-ms", value)

    assert stopped.value.code == 2
    assert "--slo-p99-ms" in capsys.readouterr().err


def test_too_many_fallbacks_fail_the_run_though_every_request_succeeded() -> None:
    env = environment()
    healthy_run(env.stats)
    known_user_lists(personalised=80, fallen=20)

    assert quit_run(env) == 1
    assert any(
        line.startswith("FAIL SLO_FALLBACK_RATIO: known-user lists not personalised 20.00 %")
        for line in verdict.LAST_VERDICT
    )
    assert "lists with fallback_reason known_user/recommender_unavailable: 20" in (
        verdict.LAST_VERDICT
    )


def test_failures_over_the_ratio_fail_the_run() -> None:
    env = environment()
    healthy_run(env.stats, failures=30)

    assert quit_run(env) == 1
    assert "FAIL SLO_FAILURE_RATIO" in "\n".join(verdict.LAST_VERDICT)


def test_the_verdict_is_said_last_on_quit(caplog: pytest.LogCaptureFixture) -> None:
    env = environment("--slo-p95-ms", "1")
    healthy_run(env.stats)
    quit_run(env)

    with caplog.at_level(logging.INFO, logger="recsys.verdict"):
        env.events.quit.fire(exit_code=1)

    said = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert said[-1][0] == "ERROR"
    assert said[-1][1].startswith("SLO MISSED: p95 latency 40 ms")
    assert ("INFO", "PASS SLO_P99_MS: p99 latency 240 ms is within 500 ms") in said


def test_workers_report_their_lists_and_the_master_merges_them() -> None:
    known_user_lists(personalised=3, fallen=1)
    report: dict[str, Any] = {}
    locust.events.report_to_master.fire(client_id="worker-1", data=report)  # on the worker
    assert OUTCOMES.known_user_lists() == (0, 0)  # sent, so drained

    locust.events.worker_report.fire(client_id="worker-1", data=report)  # on the master
    locust.events.worker_report.fire(client_id="worker-2", data=report)

    assert OUTCOMES.known_user_lists() == (2, 8)
    assert OUTCOMES.reasons() == {"known_user/recommender_unavailable": 2}


# ── the resilience scenario ───────────────────────────────────────────────────────────────
def resilience_run(clock: Clock, faults: list[Fault], *args: str) -> Environment:
    """40 s of load with a 700 ms p99 burst at 21-25 s, the faults at 20-30 s."""
    env = environment(*args)
    run_with_history(env.stats, clock, [100] * 21 + [700] * 5 + [100] * 14)
    shape = ResilienceShape()
    shape.script = FaultScript(Api("http://127.0.0.1:1"), 45, 30, "retrain", T0, faults)
    env.shape_class = shape
    return env


SWAP = Fault("model swap", T0 + 20, T0 + 22, "version 1 -> 2 (retrain), served after 2 s", True)
KILL = Fault("replica kill", T0 + 25, T0 + 27, "pid 42 killed; back after 2.0 s", True)


def test_a_resilience_run_passes_with_a_latency_spike_and_reports_it(clock: Clock) -> None:
    env = resilience_run(clock, [SWAP, KILL], "--slo-p99-ms", "1")

    assert quit_run(env) == 0  # latency is reported, not gated, while faults are injected
    lines = verdict.LAST_VERDICT
    assert "PASS model swap: version 1 -> 2 (retrain), served after 2 s" in lines
    assert "PASS 5xx: 0 responses with a 5xx status" in lines
    assert any(line.startswith("info SLO_P99_MS: p99 latency 700 ms is over") for line in lines)
    [spike] = [line for line in lines if line.startswith("info p99 spike:")]
    assert "steady p99 100 ms before the faults, max 700 ms during them (+600 ms, 7.0x)" in spike
    assert "model swap 700 ms (at 20-22 s), replica kill 700 ms (at 25-27 s)" in spike


def test_a_5xx_under_faults_fails_the_resilience_run(clock: Clock) -> None:
    env = resilience_run(clock, [SWAP, KILL])
    fail(env.stats, POPULAR, server_error(503))

    assert quit_run(env) == 1
    assert verdict.LAST_VERDICT[-1] == "SLO MISSED: 1 responses with a 5xx status"


def test_a_fault_that_did_not_recover_or_happen_fails_the_resilience_run(clock: Clock) -> None:
    lost = Fault("replica kill", T0 + 25, T0 + 145, "the replica did not come back", False)
    env = resilience_run(clock, [SWAP, lost])
    assert quit_run(env) == 1
    assert "FAIL replica kill: the replica did not come back" in verdict.LAST_VERDICT

    env = resilience_run(clock, [SWAP])
    fail(env.stats, EVENTS, "HTTP 422 (unexpected): Invalid input")
    assert quit_run(env) == 1
    assert "FAIL faults: 1 of 2 faults injected" in verdict.LAST_VERDICT
