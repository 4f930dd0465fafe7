"""Validate rendered Kubernetes manifests: schemas, cross-references and the deploy rules.

    python deploy/check/validate_manifests.py --kubernetes-version 1.30.0 \
        [--external Secret/recsys-secrets ...] RENDERED.yaml [...]

Run by scripts/check-deploy.sh with the interpreter of .venv-deploy (kubernetes-validate and
PyYAML come from deploy/requirements-check.txt). For every file, which is one
``kustomize build`` of an overlay with or without components, it checks:

1. every object against the Kubernetes OpenAPI schemas of the stated version, strictly (an
   unknown field is an error), with the schemas kubernetes-validate ships (no network);
   Prometheus Operator objects (monitoring.coreos.com) have no schema there and get the
   reference checks below instead;
2. that references resolve inside the same rendering (references.py): Service selectors and
   named target ports, HPA targets, PDB selectors, ServiceAccounts, ConfigMaps, Secrets and
   PVCs used by pods (unless ``optional: true`` or named with --external: created outside
   kustomize), named probe ports, ServiceMonitor selectors and ports;
3. the deployment rules of this repository (rules.py): restricted security contexts,
   requests and limits, liveness and readiness probes, writable emptyDirs only on /tmp, a
   startup probe on the recommender, one beat replica with the Recreate strategy;
4. what the rendering exposes (exposure.py): the Ingress paths, a body size at the Ingress
   no smaller than the gateway's, and, in production, a default-deny NetworkPolicy;
5. that the recommender's MODEL_MEMORY_LIMIT_MB fits its memory limit (memory.py).

Prints one line per file and every problem found; exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import yaml

# The checks beside this file (the script's folder is on sys.path).
from exposure import check_exposure
from manifests import Obj, ident
from memory import check_model_memory
from references import check_references
from rules import check_rules

# kubernetes-validate reads and parses the schema files again for every object; they never
# change within a run, so parse each once (most of the time of a run otherwise).
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    kubernetes_validate.utils.schema_contents
)

CRD_GROUPS = ("monitoring.coreos.com/",)


def load(path: Path) -> list[Obj]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


@functools.cache
def schema_problems(document: str, version: str) -> tuple[str, ...]:
    """The schema problems of one object, given as JSON: the renderings of one overlay share
    most of their objects, and each distinct object is validated once per run."""
    obj = json.loads(document)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(part) for part in error.path)
        return (f"{ident(obj)}: schema: {path}: {error.message}",)
    except kubernetes_validate.SchemaNotFoundError:
        return (
            f"{ident(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')} "
            f"in Kubernetes {version}",
        )
    return ()


def check_schemas(objects: list[Obj], version: str) -> list[str]:
    return [
        problem
        for obj in objects
        if not str(obj.get("apiVersion", "")).startswith(CRD_GROUPS)
        for problem in schema_problems(json.dumps(obj, sort_keys=True), version)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", default="1.30.0")
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="KIND/NAME",
        help="an object the manifests use that is created outside kustomize",
    )
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    external = set(args.external)
    failed = False
    for path in args.files:
        try:
            objects = load(path)
        except yaml.YAMLError as error:
            say(f"FAIL {path}: not YAML: {error}")
            failed = True
            continue
        problems = [
            *check_schemas(objects, args.kubernetes_version),
            *check_references(objects, external),
            *check_rules(objects),
            *check_exposure(objects),
            *check_model_memory(objects),
        ]
        crds = sum(str(o.get("apiVersion", "")).startswith(CRD_GROUPS) for o in objects)
        if problems:
            failed = True
            say(f"FAIL {path.name}: {len(problems)} problem(s) in {len(objects)} objects")
            for problem in problems:
                say(f"  - {problem}")
        else:
            crd_note = f", {crds} monitoring.coreos.com by reference only" if crds else ""
            say(f"ok   {path.name}: {len(objects)} objects{crd_note}")
    return 1 if failed else 0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
