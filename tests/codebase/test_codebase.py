"""Rules of the codebase that a reader copying it relies on, checked on every source module
(tests aside): modules stay small enough to read whole, and the services' Redis traffic goes
through one maintained client behind one boundary, with no protocol code of our own; every
wire and stored shape is a model of the contract package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("shared/src", "services", "scripts", "loadtests")
MAX_LINES = 400
#: The one module that talks to valkey-glide (``recsys_shared.redis``).
CLIENT_BOUNDARY = ROOT / "shared/src/recsys_shared/redis.py"
#: The contract's wire and stored shapes, every one a pydantic model.
SCHEMAS = ROOT / "shared/src/recsys_shared/schemas"


def source_modules() -> list[Path]:
    modules = [
        path
        for root in SOURCE_ROOTS
        for path in (ROOT / root).rglob("*.py")
        if "tests" not in path.relative_to(ROOT).parts and not path.name.startswith("test_")
    ]
    assert len(modules) > 50, "the walk found too few modules: a root is misnamed"
    return sorted(modules)


MODULES = source_modules()


@pytest.mark.parametrize("module", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_source_module_is_over_the_line_limit(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(ROOT)}: {lines} lines; split it by concern"


def test_only_the_client_boundary_imports_glide() -> None:
    importers = [
        path.relative_to(ROOT)
        for path in MODULES
        if re.search(r"^\s*(import glide|from glide\b)", path.read_text(), re.MULTILINE)
    ]
    assert importers == [CLIENT_BOUNDARY.relative_to(ROOT)]


def test_no_module_packs_the_redis_protocol_or_imports_private_redis_py() -> None:
    # RESP framing ("*<n>\r\n$<len>\r\n…") or redis-py's private parser and connection
    # modules: the signs of a hand-written Redis client.
    forbidden = re.compile(r"redis\._parsers|from redis\.(_|connection import)|\\r\\n\$|b\"\*%d")
    offenders = [path.relative_to(ROOT) for path in MODULES if forbidden.search(path.read_text())]
    assert offenders == []


def test_every_wire_shape_is_a_model_of_the_contract_package() -> None:
    # A pydantic model declared in a service, a script or a load test is a shape the contract
    # package does not know: it belongs in ``recsys_shared.schemas`` (settings aside).
    declaration = re.compile(r"^class \w+\((\w+\.)?(BaseModel|InputModel|RootModel)\b", re.M)
    offenders = [
        path.relative_to(ROOT)
        for path in MODULES
        if SCHEMAS not in path.parents and declaration.search(path.read_text())
    ]
    assert offenders == []
