"""``.venv-loadtest``: Locust's own virtualenv, kept out of the project's uv environment.

Built from the pinned ``loadtests/requirements.txt`` with uv when it is on PATH (else venv and
pip), and again only when that file changes. Standard library only: this runs before it exists.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-loadtest"
REQUIREMENTS = ROOT / "loadtests" / "requirements.txt"


def _uv() -> list[str] | None:
    if found := shutil.which("uv"):
        return [found]
    probe = subprocess.run(
        [sys.executable, "-m", "uv", "--version"], capture_output=True, check=False
    )
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def ensure_venv() -> Path:
    """The virtualenv's python, with exactly the pinned requirements installed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    print(f"loadtest | installing {REQUIREMENTS.relative_to(ROOT)} into {VENV.name}/", flush=True)
    if uv := _uv():
        if not python.exists():
            subprocess.run(
                [*uv, "venv", "--quiet", "--python", sys.executable, str(VENV)], check=True
            )
        install = [*uv, "pip", "install", "--quiet", "--python", str(python)]
    else:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*install, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(digest + "\n")
    return python


def in_venv() -> bool:
    """Whether this interpreter is the load test's virtualenv."""
    return Path(sys.prefix).resolve() == VENV.resolve()
