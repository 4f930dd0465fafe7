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
2. that references resolve inside the same rendering: Service selectors and named target
   ports, HPA targets, PDB selectors, ServiceAccounts, ConfigMaps, Secrets and PVCs used by
   pods (unless ``optional: true`` or named with --external: created outside kustomize),
   named probe ports, ServiceMonitor selectors and ports;
3. the deployment rules of this repository: restricted security contexts, requests and
   limits, liveness and readiness probes, writable emptyDirs only on /tmp, a startup probe
   on the recommender, one beat replica with the Recreate strategy;
4. what the rendering exposes (exposure.py): the Ingress paths and, in production, a
   default-deny NetworkPolicy.

Prints one line per file and every problem found; exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml
from exposure import check_exposure  # beside this file: the script's folder is on sys.path

# kubernetes-validate reads and parses the schema files again for every object; they never
# change within a run, so parse each once (most of the time of a run otherwise).
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    kubernetes_validate.utils.schema_contents
)

CRD_GROUPS = ("monitoring.coreos.com/",)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Pods whose probes a long-running service must have (a Job runs to completion instead).
SERVING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}

Obj = dict[str, Any]
#: The only path where a pod may write to an emptyDir (the root filesystem is read-only).
WRITABLE_PATH = "/tmp"  # noqa: S108 - a mount point inside the container, not a temp file


def load(path: Path) -> list[Obj]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def ident(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]
    return None


def pod_labels(obj: Obj) -> dict[str, str]:
    if obj.get("kind") == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = obj["spec"]["template"]
    return template.get("metadata", {}).get("labels", {}) or {}


def containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", []) or []
    yield from spec.get("containers", []) or []


def labels_match(wanted: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """A Service's selector: every key with its value (an empty selector selects nothing here)."""
    return bool(wanted) and all(labels.get(key) == value for key, value in (wanted or {}).items())


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions), as PDBs and ServiceMonitors use."""
    if not selector:
        return False
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []) or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


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


def check_references(objects: list[Obj], external: set[str]) -> list[str]:
    problems: list[str] = []
    names: dict[str, set[str]] = {}
    for obj in objects:
        names.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    workloads = [obj for obj in objects if obj.get("kind") in WORKLOAD_KINDS]
    services = [obj for obj in objects if obj.get("kind") == "Service"]

    def exists(kind: str, name: str) -> bool:
        return name in names.get(kind, set()) or f"{kind}/{name}" in external

    def port_names(workload: Obj) -> set[str]:
        spec = pod_spec(workload) or {}
        return {
            port["name"]
            for container in containers(spec)
            for port in container.get("ports", []) or []
            if "name" in port
        }

    for service in services:
        selector = service["spec"].get("selector")
        if not selector:
            continue
        matched = [w for w in workloads if labels_match(selector, pod_labels(w))]
        if not matched:
            problems.append(f"{ident(service)}: selector {selector} matches no pod template")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and not any(target in port_names(w) for w in matched):
                problems.append(f"{ident(service)}: targetPort '{target}' is no container port")

    for obj in objects:
        kind = obj.get("kind")
        if kind == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            if not exists(target["kind"], target["name"]):
                problems.append(f"{ident(obj)}: scales {target['kind']}/{target['name']}, absent")
        elif kind == "PodDisruptionBudget":
            selector = obj["spec"].get("selector")
            if not any(selector_matches(selector, pod_labels(w)) for w in workloads):
                problems.append(f"{ident(obj)}: selector matches no pod template")
        elif kind == "ServiceMonitor":
            selector = obj["spec"].get("selector")
            matched = [s for s in services if selector_matches(selector, s["metadata"]["labels"])]
            if not matched:
                problems.append(f"{ident(obj)}: selector matches no Service")
            for endpoint in obj["spec"].get("endpoints", []):
                wanted = endpoint.get("port")
                if not any(
                    wanted in {p.get("name") for p in s["spec"].get("ports", [])} for s in matched
                ):
                    problems.append(f"{ident(obj)}: endpoint port '{wanted}' is on no Service")
        elif kind == "Ingress":
            for rule in obj["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]["name"]
                    if not exists("Service", backend):
                        problems.append(f"{ident(obj)}: backend Service/{backend} is absent")

        spec = pod_spec(obj)
        if spec is None:
            continue
        account = spec.get("serviceAccountName")
        if account and not exists("ServiceAccount", account):
            problems.append(f"{ident(obj)}: ServiceAccount/{account} is absent")
        claim_templates = {
            t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", []) or []
        }
        for volume in spec.get("volumes", []) or []:
            if "configMap" in volume:
                ref = volume["configMap"]
                if not ref.get("optional") and not exists("ConfigMap", ref["name"]):
                    problems.append(f"{ident(obj)}: ConfigMap/{ref['name']} is absent")
            if "secret" in volume:
                ref = volume["secret"]
                if not ref.get("optional") and not exists("Secret", ref["secretName"]):
                    problems.append(f"{ident(obj)}: Secret/{ref['secretName']} is absent")
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if not exists("PersistentVolumeClaim", claim):
                    problems.append(f"{ident(obj)}: PersistentVolumeClaim/{claim} is absent")
        volume_names = {v["name"] for v in spec.get("volumes", []) or []} | claim_templates
        for container in containers(spec):
            where = f"{ident(obj)} container {container['name']}"
            for source in container.get("envFrom", []) or []:
                for key, kind_name in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    ref = source.get(key)
                    if ref and not ref.get("optional") and not exists(kind_name, ref["name"]):
                        problems.append(f"{where}: {kind_name}/{ref['name']} is absent")
            for variable in container.get("env", []) or []:
                value_from = variable.get("valueFrom", {}) or {}
                for key, kind_name in (
                    ("configMapKeyRef", "ConfigMap"),
                    ("secretKeyRef", "Secret"),
                ):
                    ref = value_from.get(key)
                    if ref and not ref.get("optional") and not exists(kind_name, ref["name"]):
                        problems.append(f"{where}: {kind_name}/{ref['name']} is absent")
            for mount in container.get("volumeMounts", []) or []:
                if mount["name"] not in volume_names:
                    problems.append(f"{where}: mounts undefined volume '{mount['name']}'")
            named_ports = {p["name"] for p in container.get("ports", []) or [] if "name" in p}
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = ((container.get(probe_name) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in named_ports:
                    problems.append(f"{where}: {probe_name} uses unknown port '{port}'")
    return problems


def check_rules(objects: list[Obj]) -> list[str]:
    problems: list[str] = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = obj["metadata"]["name"]
        pod_context = spec.get("securityContext", {}) or {}
        if pod_context.get("runAsNonRoot") is not True:
            problems.append(f"{ident(obj)}: pod securityContext.runAsNonRoot is not true")
        if (pod_context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{ident(obj)}: pod seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{ident(obj)}: automountServiceAccountToken is not false")
        writable = {v["name"] for v in spec.get("volumes", []) or [] if "emptyDir" in v}
        for container in containers(spec):
            where = f"{ident(obj)} container {container['name']}"
            context = container.get("securityContext", {}) or {}
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if (context.get("capabilities") or {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities do not drop ALL")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            resources = container.get("resources", {}) or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        problems.append(f"{where}: no {resource} {part}")
            if obj["kind"] in SERVING_KINDS:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        problems.append(f"{where}: no {probe}")
            for mount in container.get("volumeMounts", []) or []:
                if mount["name"] in writable and mount["mountPath"] != WRITABLE_PATH:
                    problems.append(
                        f"{where}: writable emptyDir at {mount['mountPath']}, not {WRITABLE_PATH}"
                    )
        if (
            obj["kind"] == "Deployment"
            and name == "recommender"
            and not all("startupProbe" in c for c in spec.get("containers", []))
        ):
            problems.append(f"{ident(obj)}: the recommender needs a startupProbe")
        if obj["kind"] == "Deployment" and name == "beat":
            if obj["spec"].get("replicas") != 1:
                problems.append(f"{ident(obj)}: beat must run exactly 1 replica")
            if (obj["spec"].get("strategy") or {}).get("type") != "Recreate":
                problems.append(f"{ident(obj)}: beat must use the Recreate strategy")
    return problems


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
