"""What the tests of scripts/ share: a script loaded as a module, to call its functions."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
LoadScript = Callable[[str], ModuleType]


@pytest.fixture
def load_script(monkeypatch: pytest.MonkeyPatch) -> LoadScript:
    """``scripts/<name>.py`` as a module named ``script_<name>`` (loadtests/run.py is another
    ``run``), registered for the test only (its dataclasses look their module up there)."""

    def load(name: str) -> ModuleType:
        module_name = f"script_{name}"
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, module_name, module)
        spec.loader.exec_module(module)
        return module

    return load
