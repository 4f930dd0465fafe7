"""What the checks read from a rendered Kubernetes object: its identity, pod template,
containers and labels, and how selectors match labels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def ident(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    if kind in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]
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
    return all(_expression_holds(e, labels) for e in selector.get("matchExpressions", []) or [])


def _expression_holds(expression: Obj, labels: dict[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return True
