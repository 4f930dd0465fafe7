"""Schemathesis against the gateway's OpenAPI document, with every check it has.

Real processes: redis-server, feature-store, two recommenders and the gateway. Every
operation is generated from the schema (valid and invalid data, stateful sequences) with an
admin key, and again without one for the authentication checks. A single failure of any
check (a 5xx, a response that breaks its schema, an undocumented status, a schema-valid
request refused, an invalid one accepted, authentication ignored) fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys_shared.processes import RedisServer
from recsys_shared.testing import ADMIN_KEY, Stack, build_stack
from recsys_shared.testing.experiments import small_versions

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "40")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("fuzz")
    server = RedisServer(workdir / "redis").start()
    stack = build_stack(server, workdir, LOG_LEVEL="WARNING")
    try:
        # Versions 1 and 2 (the hooks point generated experiments at them).
        assert small_versions(server.url, stack.env["ARTIFACT_URL"]) == [1, 2]
        for name in ("feature-store", "recommender1", "recommender2", "gateway"):
            stack.start(name)
        yield stack
    finally:
        stack.close()
        server.stop()


def test_the_gateway_passes_every_schemathesis_check(system: Stack) -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{system.gateway}/openapi.json",
            "--header",
            f"X-API-Key: {ADMIN_KEY}",
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--request-timeout",
            "10",
            "--seed",
            "20261125",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
            "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        },
    )
    summary = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert "unique failure" not in result.stdout, summary
