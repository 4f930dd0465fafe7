"""The deployment checks run in `make test`, and they can fail.

``scripts/check-deploy.sh`` renders every overlay with every subset of components, validates
the objects against the Kubernetes schemas and the repository's rules, runs checkov, parses
docker-compose.yml with a real compose and lints the YAML. The first test runs all of it on
the repository; the others break a copy of deploy/ in one way each and run the render and
validate part against the copy (DEPLOY_DIR), which must then fail and say why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-deploy.sh"


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.timeout(900)  # the first run on a new machine installs the tools
def test_every_deploy_check_passes() -> None:
    result = run_check()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "all deploy checks passed" in output
    # Every overlay, alone and with every subset of the components.
    overlays = [d for d in (ROOT / "deploy/k8s/overlays").iterdir() if d.is_dir()]
    components = [d for d in (ROOT / "deploy/k8s/components").iterdir() if d.is_dir()]
    rendered = re.findall(r"^ok {3}\S+ \(\d+ objects\)$", output, re.MULTILINE)
    assert len(rendered) == len(overlays) * 2 ** len(components) >= 16, output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: update this test with the manifests"
    path.write_text(text.replace(old, new, 1))


def break_unknown_field(deploy: Path) -> None:
    """A misspelt field: only a strict schema validation notices it."""
    edit(
        deploy / "k8s/base/gateway.yaml",
        "          imagePullPolicy: Always\n",
        "          imagePullPolicy: Always\n          imagePulPolicy: Always\n",
    )


def break_target_port(deploy: Path) -> None:
    """A Service whose named target port no container has: valid YAML, dead Service."""
    edit(deploy / "k8s/base/recommender.yaml", "targetPort: http", "targetPort: htpp")


def break_security_context(deploy: Path) -> None:
    """A writable root filesystem: against the rules of this repository."""
    edit(
        deploy / "k8s/base/feature-store.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    )


def break_render(deploy: Path) -> None:
    """A resource the base lists but that does not exist: kustomize cannot build."""
    (deploy / "k8s/base/beat.yaml").unlink()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (break_unknown_field, "'imagePulPolicy' was unexpected"),
        (break_target_port, "targetPort 'htpp' is no container port"),
        (break_security_context, "readOnlyRootFilesystem is not true"),
        (break_render, "FAIL dev"),
    ],
    ids=["unknown-field", "target-port", "security-context", "render"],
)
def test_a_broken_base_fails_the_check(
    breakage: Callable[[Path], None], expected: str, tmp_path: Path
) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    breakage(copy)
    result = run_check(DEPLOY_DIR=str(copy), CHECKS="render,validate")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
