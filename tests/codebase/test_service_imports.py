"""Each image installs one service and what its lock entry needs, no more
(deploy/docker/Dockerfile: ``uv sync --package <service>``, the ``s3`` extra for the services
that read artifacts). The workspace's venv holds every package, so a service importing one
outside its own closure passes every other test and crashes at start-up in its image (the
gateway once imported numpy through the experiments' statistics). Here each service's entry
modules are imported in a process where every other installed package, and the other
services, fail to import."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: service → (the extras its image installs, the modules its processes import at start-up).
SERVICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gateway": ((), ("gateway.main",)),
    "recommender": (("s3",), ("recommender.main",)),
    "feature-store": (("s3",), ("feature_store.main",)),
    "retraining-worker": (
        ("s3",),
        ("retraining_worker.__main__", "retraining_worker.celery_app", "retraining_worker.tasks"),
    ),
}
PACKAGES = {"gateway", "recommender", "feature_store", "retraining_worker"}

#: Run in the child: the named top-level packages cannot be imported, then the modules are.
_IMPORT_WITHOUT = """
import importlib, importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"{name} is not installed in this image", name=name)
        return None
sys.meta_path.insert(0, Blocked())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(service: str, extras: tuple[str, ...]) -> set[str]:
    """The locked distributions ``uv sync --package <service>`` installs (markers ignored: a
    dependency that is not for this platform only widens what is allowed)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {package["name"]: package for package in lock["package"]}
    installed: set[tuple[str, tuple[str, ...]]] = set()
    waiting = [(service, extras)]
    while waiting:
        name, wanted = waiting.pop()
        if (name, wanted) in installed:
            continue
        installed.add((name, wanted))
        package = packages[name]
        dependencies = list(package.get("dependencies", []))
        for extra in wanted:
            dependencies += package.get("optional-dependencies", {}).get(extra, [])
        waiting += [(dep["name"], tuple(dep.get("extra", []))) for dep in dependencies]
    return {name for name, _ in installed}


def _not_installed(service: str, extras: tuple[str, ...]) -> set[str]:
    """Top-level import names this service's image does not have."""
    allowed = _closure(service, extras)
    blocked = {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not any(_normalized(distribution) in allowed for distribution in distributions)
    }
    own = SERVICES[service][1][0].partition(".")[0]
    return (blocked | PACKAGES - {own}) - set(sys.stdlib_module_names)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_starts_with_only_what_its_image_installs(service: str) -> None:
    extras, modules = SERVICES[service]
    blocked = _not_installed(service, extras)
    assert "numpy" in blocked or service != "gateway"  # the check itself blocks something
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT, ",".join(sorted(blocked)), *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
