"""`make run`'s demo loads and trains with the keys the system was started with:
``API_KEYS=... make run`` works without ``DEMO=0``, and the examples it prints never show a
user's own key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from recsys_shared.processes import free_port

from .conftest import LoadScript

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(load_script: LoadScript) -> ModuleType:
    return load_script("demo")


def test_the_demo_uses_the_first_client_and_admin_keys_of_api_keys(demo: ModuleType) -> None:
    keys = demo.DemoKeys.from_api_keys("ops:viewer, app-1:client, root:admin, app-2:client")

    keys.check_complete()  # does not raise
    assert (keys.client, keys.admin) == ("app-1", "root")
    # The examples name the user's own keys by role; the development keys as they are.
    assert (keys.shown("client"), keys.shown("admin")) == ("<your client key>", "<your admin key>")
    assert demo.DemoKeys().shown("client") == "dev-client-key"


@pytest.mark.parametrize(
    ("api_keys", "words"),
    [
        ("app-1:client", "needs a client key and an admin key"),
        ("root:admin,ops:viewer", "needs a client key and an admin key"),
        ("app-1:superuser", "API_KEYS cannot be used: API_KEYS role 'superuser'"),
    ],
)
def test_keys_the_demo_cannot_use_are_refused_naming_why(
    demo: ModuleType, api_keys: str, words: str
) -> None:
    with pytest.raises(SystemExit, match=words):
        demo.DemoKeys.from_api_keys(api_keys).check_complete()


def test_make_run_refuses_them_before_starting_anything() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/run.py"],
        cwd=ROOT,
        env={
            **os.environ,
            "PORT": str(free_port()),
            "API_KEYS": "app-1:client",
            # Were the keys not checked first, the start would stop here, starting nothing.
            "REDIS_URL": f"redis://127.0.0.2:{free_port()}/0",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "needs a client key and an admin key in API_KEYS" in result.stderr
    assert "starting redis-server" not in result.stdout + result.stderr
