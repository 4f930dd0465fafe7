"""The Prometheus config, alert rules and their unit tests pass promtool, and the tests can fail.

``scripts/check-rules.sh`` installs promtool when it is missing (Debian's ``prometheus``
package), then runs ``promtool check config``, ``promtool check rules`` and ``promtool test
rules`` on deploy/monitoring/prometheus/. The second test breaks one alert's threshold in a copy
(PROMETHEUS_DIR) and expects the rule unit tests to catch it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from recsys_shared.testing.scripts import run_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-rules.sh"
PROMETHEUS = ROOT / "deploy" / "monitoring" / "prometheus"


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, cwd=ROOT, timeout=600, **env)


@pytest.mark.timeout(600)  # the first run on a new machine installs promtool with apt
def test_every_rule_check_passes() -> None:
    result = run_check()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "all rule checks passed" in output
    # check config loaded the rule files through prometheus.yml's rule_files.
    assert "SUCCESS: 1 rule files found" in output, output


@pytest.mark.timeout(600)
def test_a_broken_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    rules = copy / "rules" / "recsys-alerts.yml"
    text = rules.read_text()
    assert text.count("> 0.05") == 1, "update this test with HighErrorRate's threshold"
    rules.write_text(text.replace("> 0.05", "> 5"))

    result = run_check(PROMETHEUS_DIR=str(copy))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "FAILED checks: test" in output, output
    assert "alertname: HighErrorRate" in output, output
