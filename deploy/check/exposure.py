"""What a rendering exposes, checked by validate_manifests.py beside the other deploy rules.

- An Ingress routes /v1 (Prefix) and nothing else, unless the services' settings (the
  ConfigMap recsys-config) say DOCS_ENABLED=true, and then exactly /v1 and the docs' paths:
  /healthz, /readyz and /metrics stay inside the cluster.
- A rendering with ENVIRONMENT=production denies all traffic by default: a NetworkPolicy
  selecting every pod, for ingress and egress, with no rule (components/network-policies).
- An Ingress passes on every body the gateway accepts: ingress-nginx's proxy-body-size is
  not below the gateway's MAX_BODY_BYTES (set in recsys-config, or its default); else the
  controller refuses those bodies itself, with its own page instead of a problem document.
"""

from __future__ import annotations

from manifests import Obj

#: What the Ingress may route: the API, and the gateway's docs when DOCS_ENABLED=true.
API_PATHS = {"/v1"}
DOCS_PATHS = {"/docs", "/redoc", "/openapi.json"}
SETTINGS = "recsys-config"
#: ingress-nginx's annotation for the largest body it passes on, and its default.
BODY_SIZE_ANNOTATION = "nginx.ingress.kubernetes.io/proxy-body-size"
INGRESS_DEFAULT_BODY_SIZE = "1m"
#: The gateway's default MAX_BODY_BYTES (gateway.config; a test holds the two equal).
GATEWAY_DEFAULT_MAX_BODY_BYTES = 1_048_576
_NGINX_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


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
        problems.extend(f"{where}: {problem}" for problem in _body_size_problems(obj, config))
    if config.get("ENVIRONMENT") == "production" and not any(
        obj.get("kind") == "NetworkPolicy" and denies_by_default(obj) for obj in objects
    ):
        problems.append(
            "ENVIRONMENT=production without a default-deny NetworkPolicy "
            "(include components/network-policies)"
        )
    return problems


def nginx_size(text: str) -> int | None:
    """Bytes of an nginx size ("1m", "512k", "2048"); 0 for no limit; None if unreadable."""
    text = text.strip().lower()
    unit = _NGINX_UNITS.get(text[-1:], 1) if text else 1
    number = text[:-1] if unit > 1 else text
    return int(number) * unit if number.isdigit() else None


def _body_size_problems(ingress: Obj, config: dict[str, str]) -> list[str]:
    annotations = ingress.get("metadata", {}).get("annotations") or {}
    stated = str(annotations.get(BODY_SIZE_ANNOTATION, INGRESS_DEFAULT_BODY_SIZE))
    passed = nginx_size(stated)
    if passed is None:
        return [f"{BODY_SIZE_ANNOTATION} {stated!r} is not an nginx size"]
    setting = config.get("MAX_BODY_BYTES", str(GATEWAY_DEFAULT_MAX_BODY_BYTES))
    if not setting.isdigit():
        return [f"MAX_BODY_BYTES {setting!r} in {SETTINGS} is not a number of bytes"]
    accepted = int(setting)
    if passed and passed < accepted:
        return [
            f"{BODY_SIZE_ANNOTATION} {stated} ({passed} bytes) is below the gateway's "
            f"MAX_BODY_BYTES ({accepted}): the controller would refuse bodies the gateway accepts"
        ]
    return []
