"""What a rendering exposes, checked by validate_manifests.py beside the other deploy rules.

- An Ingress routes /v1 (Prefix) and nothing else, unless the services' settings (the
  ConfigMap recsys-config) say DOCS_ENABLED=true, and then exactly /v1 and the docs' paths:
  /healthz, /readyz and /metrics stay inside the cluster.
- A rendering with ENVIRONMENT=production denies all traffic by default: a NetworkPolicy
  selecting every pod, for ingress and egress, with no rule (components/network-policies).
"""

from __future__ import annotations

from manifests import Obj

#: What the Ingress may route: the API, and the gateway's docs when DOCS_ENABLED=true.
API_PATHS = {"/v1"}
DOCS_PATHS = {"/docs", "/redoc", "/openapi.json"}
SETTINGS = "recsys-config"


def settings(objects: list[Obj]) -> dict[str, str]:
    """The services' settings: the ConfigMap recsys-config (its name has kustomize's hash)."""
    for obj in objects:
        name = str(obj.get("metadata", {}).get("name", ""))
        if obj.get("kind") == "ConfigMap" and (name == SETTINGS or name.startswith(SETTINGS + "-")):
            return {str(k): str(v) for k, v in (obj.get("data") or {}).items()}
    return {}


def denies_by_default(policy: Obj) -> bool:
    spec = policy.get("spec", {}) or {}
    return (
        not (spec.get("podSelector") or {})
        and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def check_exposure(objects: list[Obj]) -> list[str]:
    """The problems of one rendering's objects, one line each."""
    problems: list[str] = []
    config = settings(objects)
    docs = config.get("DOCS_ENABLED", "false").lower() == "true"
    wanted = API_PATHS | DOCS_PATHS if docs else API_PATHS
    for obj in objects:
        if obj.get("kind") != "Ingress":
            continue
        where = f"Ingress/{obj['metadata']['name']}"
        paths = {
            path.get("path", "/"): path.get("pathType")
            for rule in obj["spec"].get("rules", []) or []
            for path in (rule.get("http") or {}).get("paths", []) or []
        }
        if obj["spec"].get("defaultBackend"):
            problems.append(f"{where}: a defaultBackend routes every path")
        extra = sorted(set(paths) - wanted)
        if extra:
            docs_paths = not docs and DOCS_PATHS & set(extra)
            because = " (the docs' paths need DOCS_ENABLED=true)" if docs_paths else ""
            problems.append(f"{where}: routes {extra}, only {sorted(wanted)}{because}")
        missing = sorted(wanted - set(paths))
        if missing:
            problems.append(f"{where}: does not route {missing}")
        for path in API_PATHS & set(paths):
            if paths[path] != "Prefix":
                problems.append(f"{where}: {path} is {paths[path]}, not Prefix")
    if config.get("ENVIRONMENT") == "production" and not any(
        obj.get("kind") == "NetworkPolicy" and denies_by_default(obj) for obj in objects
    ):
        problems.append(
            "ENVIRONMENT=production without a default-deny NetworkPolicy "
            "(include components/network-policies)"
        )
    return problems
