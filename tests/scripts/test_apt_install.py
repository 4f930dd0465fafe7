"""scripts/apt-install.sh, the one place the project runs apt-get, against stand-ins for apt.

`make test` can start two installs at once on a fresh machine (the deployment checks on one
worker, the browser or rule tests on the other), and apt-get fails at once on a held lock. The
stand-in ``apt-get`` on PATH fails the same way when another call holds its lock, takes a
moment over each call, and records what it was asked; ``apt-cache`` answers a candidate for the
packages the test says apt knows; ``id`` answers the user id the test chooses. Everything else
(bash, flock) is the machine's own.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "apt-install.sh"
#: The options every apt-get call gets from the script before its command.
WAITING = "-o DPkg::Lock::Timeout=900 -qq"

_APT_GET = """#!/usr/bin/env bash
state="$FAKE_APT_STATE"
if ! mkdir "$state/dpkg-lock" 2>/dev/null; then
    echo "E: Could not get lock $state/dpkg-lock. It is held by another process" >&2
    echo "held" >>"$state/refused"
    exit 100
fi
trap 'rmdir "$state/dpkg-lock"' EXIT
printf '%s\\n' "$*" >>"$state/calls"
sleep 0.3
case "$*" in
*" update") touch "$state/updated" ;;
*" install "*)
    if [[ -e "$POLICY_RC_D" ]]; then held=held; else held=free; fi
    echo "$held" >>"$state/services"
    failing="$(cat "$state/failing-installs" 2>/dev/null || echo 0)"
    if [[ $failing -gt 0 ]]; then
        echo $((failing - 1)) >"$state/failing-installs"
        echo "E: Failed to fetch ... 404 Not Found" >&2
        exit 100
    fi ;;
esac
"""
_APT_CACHE = """#!/usr/bin/env bash
package="${@: -1}"
if [[ -e "$FAKE_APT_STATE/updated" ]] || grep -qx "$package" "$FAKE_APT_STATE/known"; then
    printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0\\n' "$package"
else
    printf '%s:\\n  Installed: (none)\\n  Candidate: (none)\\n' "$package"
fi
"""
_ID = """#!/usr/bin/env bash
echo "$FAKE_UID"
"""


@dataclass
class FakeApt:
    """A folder of stand-ins put first on PATH, and what they recorded."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    def env(self, uid: int = 0) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}",
            "FAKE_APT_STATE": str(self.state),
            "FAKE_UID": str(uid),
            "APT_LOCK": str(self.root / "install.lock"),
            "POLICY_RC_D": str(self.root / "policy-rc.d"),
        }

    def start(self, *packages: str, uid: int = 0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", str(SCRIPT), *packages],
            env=self.env(uid),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def install(self, *packages: str, uid: int = 0) -> tuple[int, str]:
        process = self.start(*packages, uid=uid)
        _, stderr = process.communicate(timeout=60)
        return process.returncode, stderr

    def recorded(self, name: str) -> list[str]:
        path = self.state / name
        return path.read_text().splitlines() if path.exists() else []


def fake_apt(tmp_path: Path, *, known: tuple[str, ...] = (), failing_installs: int = 0) -> FakeApt:
    fake = FakeApt(tmp_path)
    (tmp_path / "bin").mkdir()
    fake.state.mkdir()
    for name, text in (("apt-get", _APT_GET), ("apt-cache", _APT_CACHE), ("id", _ID)):
        (tmp_path / "bin" / name).write_text(text)
        (tmp_path / "bin" / name).chmod(0o755)
    (fake.state / "known").write_text("".join(f"{package}\n" for package in known))
    (fake.state / "failing-installs").write_text(f"{failing_installs}\n")
    return fake


def test_two_installs_started_at_once_take_turns_and_both_succeed(tmp_path: Path) -> None:
    fake = fake_apt(tmp_path)  # apt knows nothing yet: each install updates, then installs
    first = fake.start("chromium", "chromium-driver")
    second = fake.start("docker-compose")

    outcomes = [process.communicate(timeout=60) for process in (first, second)]

    assert [first.returncode, second.returncode] == [0, 0], outcomes
    assert fake.recorded("refused") == []
    installs = sorted(call for call in fake.recorded("calls") if " install " in call)
    assert installs == [
        f"{WAITING} install -y --no-install-recommends chromium chromium-driver",
        f"{WAITING} install -y --no-install-recommends docker-compose",
    ]


def test_apt_updates_only_when_it_knows_no_candidate(tmp_path: Path) -> None:
    fake = fake_apt(tmp_path, known=("chromium",))

    assert fake.install("chromium")[0] == 0
    assert fake.recorded("calls") == [f"{WAITING} install -y --no-install-recommends chromium"]

    assert fake.install("chromium", "wrk")[0] == 0
    assert fake.recorded("calls")[1:] == [
        f"{WAITING} update",
        f"{WAITING} install -y --no-install-recommends chromium wrk",
    ]


def test_a_failed_install_is_retried_once_after_an_update(tmp_path: Path) -> None:
    fake = fake_apt(tmp_path, known=("prometheus",), failing_installs=1)

    returncode, stderr = fake.install("prometheus")

    assert returncode == 0, stderr
    install = f"{WAITING} install -y --no-install-recommends prometheus"
    assert fake.recorded("calls") == [install, f"{WAITING} update", install]


def test_an_install_failing_twice_fails_the_script(tmp_path: Path) -> None:
    fake = fake_apt(tmp_path, known=("prometheus",), failing_installs=2)

    returncode, stderr = fake.install("prometheus")

    assert returncode != 0
    assert "404 Not Found" in stderr


def test_services_are_held_during_the_install_and_released_after(tmp_path: Path) -> None:
    fake = fake_apt(tmp_path, known=("prometheus",))
    policy = tmp_path / "policy-rc.d"

    assert fake.install("prometheus")[0] == 0
    assert fake.recorded("services") == ["held"]
    assert not policy.exists()

    policy.write_text("#!/bin/sh\nexit 0\n")  # the machine's own policy stays as it is
    assert fake.install("prometheus")[0] == 0
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_without_root_it_says_what_to_install_and_runs_no_apt(tmp_path: Path) -> None:
    fake = fake_apt(tmp_path, known=("wrk",))

    returncode, stderr = fake.install("wrk", uid=1000)

    assert returncode == 2
    assert "needs root" in stderr
    assert "apt-get install -y --no-install-recommends wrk" in stderr
    assert fake.recorded("calls") == []
