"""The repository's shell scripts run by the tests that check them (deploy, alert rules)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_script(
    script: Path, *, cwd: Path, timeout: float, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash from ``cwd``, ``env`` added to this process's environment,
    as ``make`` runs it; the output is captured and a failure is the test's to judge."""
    return subprocess.run(
        ["bash", str(script)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
