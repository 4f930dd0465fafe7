"""`make loadtest`'s settings come from the environment (DURATION=2m make loadtest): a value it
cannot use is a usage error, exit 2 ("the load test did not run"), naming it; never a
traceback's exit 1, which the load test keeps for a missed SLO."""

from __future__ import annotations

import pytest
from run import EXIT_NOT_RUN, parse_args

#: A setting as a user types it, and the words the usage error names it with.
UNUSABLE = {
    "DURATION=abc": "'abc' is not a positive duration",
    "DURATION=-5m": "'-5m' is not a positive duration",
    "READY_TIMEOUT=soon": "'soon' is not a positive duration",
    "USERS=many": "--users: invalid int value: 'many'",
    "SPAWN_RATE=fast": "--spawn-rate: invalid float value: 'fast'",
    "SHAPE=square": "SHAPE must be one of steady, ramp, spike, none, not 'square'",
    "WORKLOAD=shop": "WORKLOAD must be one of site, movielens, not 'shop'",
    "SWAP=flip": "SWAP must be one of retrain, activate, not 'flip'",
}


@pytest.mark.parametrize("setting", UNUSABLE)
def test_an_unusable_setting_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
) -> None:
    name, value = setting.split("=", 1)
    monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as stopped:
        parse_args([])

    assert stopped.value.code == EXIT_NOT_RUN
    assert UNUSABLE[setting] in capsys.readouterr().err


def test_settings_from_the_environment_are_read_in_their_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "DURATION": "2m",
        "USERS": "7",
        "SHAPE": "spike",
        "SWAP": "activate",
    }.items():
        monkeypatch.setenv(name, value)

    args = parse_args([])

    assert (args.duration, args.users, args.shape, args.swap) == (120, 7, "spike", "activate")
    assert parse_args(["--duration", "90s"]).duration == 90  # an argument beats the environment
