"""The recsys contract package: imported by every service, never copied."""

from __future__ import annotations

import os

__version__ = "0.1.0"


def code_version() -> str:
    """What code this process runs: ``RECSYS_CODE_VERSION`` (the images' ``CODE_VERSION`` build
    argument; ``make run`` sets it from ``git describe``), else the package version."""
    return os.environ.get("RECSYS_CODE_VERSION") or __version__
