"""Rules of the codebase that a reader copying it relies on, checked on every source module
(tests aside): modules stay small enough to read whole, and the services' Redis traffic goes
through one maintained client behind one boundary, with no protocol code of our own; every
wire and stored shape is a model of the contract package; one script runs apt-get."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from recsys_shared import schemas

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("shared/src", "services", "scripts", "loadtests")
MAX_LINES = 400
#: The one module that talks to valkey-glide (``recsys_shared.redis``).
CLIENT_BOUNDARY = ROOT / "shared/src/recsys_shared/redis.py"
#: The contract's wire and stored shapes, every one a pydantic model.
SCHEMAS = ROOT / "shared/src/recsys_shared/schemas"
#: The one script that runs apt-get, holding the project's install lock.
APT_INSTALL = ROOT / "scripts/apt-install.sh"
#: apt-get run as a command in a shell script (not named in a message), or from Python.
RUNS_APT_GET = re.compile(r'(?:^|[{;&|(])\s*(?:[A-Z_]+=\S*\s+)*apt-get\s|\[\s*"apt-get"', re.M)


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


def test_only_the_install_script_runs_apt_get() -> None:
    # Two installs at once fail on apt's lock; apt-install.sh makes them take turns.
    scripts = [*ROOT.glob("scripts/**/*.sh"), *ROOT.glob("deploy/**/*.sh"), *MODULES]
    runners = [path.relative_to(ROOT) for path in scripts if RUNS_APT_GET.search(path.read_text())]
    assert runners == [APT_INSTALL.relative_to(ROOT)]


def test_the_apt_get_check_tells_a_command_from_a_message() -> None:
    commands = [
        "    DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        'apt_get() { apt-get -o X=1 -qq "$@"; }',
        'subprocess.run(["apt-get", "install", "-y", "wrk"])',
    ]
    message = 'say "FAIL: installing needs root: apt-get install -y wrk"'
    assert [bool(RUNS_APT_GET.search(line)) for line in [*commands, message]] == [1, 1, 1, 0]


def test_every_wire_shape_is_a_model_of_the_contract_package() -> None:
    # A pydantic model declared in a service, a script or a load test is a shape the contract
    # package does not know: it belongs in ``recsys_shared.schemas`` (settings aside). A model
    # is a class on pydantic's bases or on any model of the contract package.
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in MODULES
        if SCHEMAS not in path.parents
        for name in declared_models(path)
    ]
    assert offenders == []


def test_the_model_check_finds_a_subclass_of_a_contract_model(tmp_path: Path) -> None:
    module = tmp_path / "routes.py"
    module.write_text(
        "from recsys_shared import schemas\n"
        "class Listed(schemas.Recommendations):\n    pass\n"
        "class Plain(dict):\n    pass\n"
        "class Bare(BaseModel):\n    pass\n"
    )
    assert declared_models(module) == ["Listed", "Bare"]


def declared_models(path: Path) -> list[str]:
    classes = [
        node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ClassDef)
    ]
    return [node.name for node in classes if any(base_name(b) in MODEL_BASES for b in node.bases)]


def base_name(base: ast.expr) -> str:
    if isinstance(base, ast.Subscript):  # RootModel[list[int]]
        base = base.value
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else ""


def contract_model_names() -> frozenset[str]:
    modules = [schemas] + [
        importlib.import_module(f"{schemas.__name__}.{info.name}")
        for info in pkgutil.iter_modules(schemas.__path__)
    ]
    models = {
        name
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseModel)
    }
    assert {"Recommendations", "InputModel"} <= models, "the contract's models were not found"
    return frozenset(models | {"BaseModel", "RootModel"})


MODEL_BASES = contract_model_names()
