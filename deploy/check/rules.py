"""The deployment rules of this repository, for every pod a rendering runs: restricted
security contexts, requests and limits, liveness and readiness probes on serving pods,
writable emptyDirs only on /tmp, a startup probe on the recommender, and one beat replica with
the Recreate strategy."""

from __future__ import annotations

from collections.abc import Iterator

from manifests import Obj, containers, ident, pod_spec

# Pods whose probes a long-running service must have (a Job runs to completion instead).
SERVING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
#: The only path where a pod may write to an emptyDir (the root filesystem is read-only).
WRITABLE_PATH = "/tmp"  # noqa: S108 - a mount point inside the container, not a temp file


def check_rules(objects: list[Obj]) -> list[str]:
    problems: list[str] = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        problems.extend(_pod_security(obj, spec))
        writable = {v["name"] for v in spec.get("volumes", []) or [] if "emptyDir" in v}
        for container in containers(spec):
            problems.extend(_container(obj, container, writable))
        problems.extend(_named_workload(obj, spec))
    return problems


def _pod_security(obj: Obj, spec: Obj) -> Iterator[str]:
    context = spec.get("securityContext", {}) or {}
    if context.get("runAsNonRoot") is not True:
        yield f"{ident(obj)}: pod securityContext.runAsNonRoot is not true"
    if (context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        yield f"{ident(obj)}: pod seccompProfile is not RuntimeDefault"
    if spec.get("automountServiceAccountToken") is not False:
        yield f"{ident(obj)}: automountServiceAccountToken is not false"


def _container(obj: Obj, container: Obj, writable: set[str]) -> Iterator[str]:
    where = f"{ident(obj)} container {container['name']}"
    context = container.get("securityContext", {}) or {}
    if context.get("readOnlyRootFilesystem") is not True:
        yield f"{where}: readOnlyRootFilesystem is not true"
    if context.get("allowPrivilegeEscalation") is not False:
        yield f"{where}: allowPrivilegeEscalation is not false"
    if (context.get("capabilities") or {}).get("drop") != ["ALL"]:
        yield f"{where}: capabilities do not drop ALL"
    if context.get("privileged"):
        yield f"{where}: privileged"
    resources = container.get("resources", {}) or {}
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(part) or {}):
                yield f"{where}: no {resource} {part}"
    if obj["kind"] in SERVING_KINDS:
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in container:
                yield f"{where}: no {probe}"
    for mount in container.get("volumeMounts", []) or []:
        if mount["name"] in writable and mount["mountPath"] != WRITABLE_PATH:
            yield f"{where}: writable emptyDir at {mount['mountPath']}, not {WRITABLE_PATH}"


def _named_workload(obj: Obj, spec: Obj) -> Iterator[str]:
    """The rules for two of this system's Deployments."""
    if obj["kind"] != "Deployment":
        return
    name = obj["metadata"]["name"]
    if name == "recommender" and not all("startupProbe" in c for c in spec.get("containers", [])):
        yield f"{ident(obj)}: the recommender needs a startupProbe"
    if name == "beat":
        if obj["spec"].get("replicas") != 1:
            yield f"{ident(obj)}: beat must run exactly 1 replica"
        if (obj["spec"].get("strategy") or {}).get("type") != "Recreate":
            yield f"{ident(obj)}: beat must use the Recreate strategy"
