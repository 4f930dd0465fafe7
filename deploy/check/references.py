"""That the references of a rendering resolve inside it: Service selectors and named target
ports, HPA targets, PDB and ServiceMonitor selectors, Ingress backends, the Services a
ConfigMap's internal ``*_URL``/``*_URLS`` settings name, and what pods use (ServiceAccounts,
ConfigMaps, Secrets, PVCs, volumes, named probe ports). An object created
outside kustomize is named as external (``KIND/NAME``); ``optional: true`` needs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from manifests import (
    WORKLOAD_KINDS,
    Obj,
    containers,
    ident,
    labels_match,
    pod_labels,
    pod_spec,
    selector_matches,
)

#: The references an env source or variable makes, by field, and the kind each names.
ENV_REFERENCES = (("configMapRef", "ConfigMap"), ("secretRef", "Secret"))
ENV_KEY_REFERENCES = (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret"))
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


class Rendering:
    """One rendering's objects, indexed for the reference checks."""

    def __init__(self, objects: list[Obj], external: set[str]) -> None:
        self.external = external
        self.names: dict[str, set[str]] = {}
        for obj in objects:
            self.names.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
        self.workloads = [obj for obj in objects if obj.get("kind") in WORKLOAD_KINDS]
        self.services = [obj for obj in objects if obj.get("kind") == "Service"]

    def exists(self, kind: str, name: str) -> bool:
        return name in self.names.get(kind, set()) or f"{kind}/{name}" in self.external

    def absent(self, ref: Obj | None, kind: str, name_field: str = "name") -> str | None:
        """The name a required reference gives to an object that is not there, if it does."""
        if not ref or ref.get("optional") or self.exists(kind, ref[name_field]):
            return None
        return str(ref[name_field])


def check_references(objects: list[Obj], external: set[str]) -> list[str]:
    rendering = Rendering(objects, external)
    problems: list[str] = []
    for service in rendering.services:
        problems.extend(_service(rendering, service))
    for obj in objects:
        problems.extend(_targets(rendering, obj))
        problems.extend(_pod(rendering, obj))
    return problems


def _service(rendering: Rendering, service: Obj) -> Iterator[str]:
    selector = service["spec"].get("selector")
    if not selector:
        return
    matched = [w for w in rendering.workloads if labels_match(selector, pod_labels(w))]
    if not matched:
        yield f"{ident(service)}: selector {selector} matches no pod template"
    ports = {name for workload in matched for name in _container_port_names(workload)}
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort")
        if isinstance(target, str) and target not in ports:
            yield f"{ident(service)}: targetPort '{target}' is no container port"


def _container_port_names(workload: Obj) -> set[str]:
    spec = pod_spec(workload) or {}
    return {name for container in containers(spec) for name in _port_names(container)}


def _port_names(container: Obj) -> set[str]:
    return {port["name"] for port in container.get("ports", []) or [] if "name" in port}


def _targets(rendering: Rendering, obj: Obj) -> Iterator[str]:
    """What an HPA scales, a PDB or ServiceMonitor selects, an Ingress routes to."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "HorizontalPodAutoscaler":
        target = spec["scaleTargetRef"]
        if not rendering.exists(target["kind"], target["name"]):
            yield f"{ident(obj)}: scales {target['kind']}/{target['name']}, absent"
    elif kind == "PodDisruptionBudget":
        selector = spec.get("selector")
        if not any(selector_matches(selector, pod_labels(w)) for w in rendering.workloads):
            yield f"{ident(obj)}: selector matches no pod template"
    elif kind == "ServiceMonitor":
        yield from _service_monitor(rendering, obj)
    elif kind == "ConfigMap":
        yield from _internal_urls(rendering, obj)
    elif kind == "Ingress":
        for rule in spec.get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]["name"]
                if not rendering.exists("Service", backend):
                    yield f"{ident(obj)}: backend Service/{backend} is absent"


def _internal_urls(rendering: Rendering, config: Obj) -> Iterator[str]:
    """A setting that names a service of the cluster by its short name (``http://name:port``,
    as RECOMMENDER_URLS and FEATURE_STORE_URL do) names a Service of the rendering."""
    for setting, value in (config.get("data") or {}).items():
        if not setting.endswith(("_URL", "_URLS")):
            continue
        for url in str(value).split(","):
            parts = urlsplit(url.strip())
            host = parts.hostname or ""
            # A short name: no dots (a domain, an IPv4 address), no colons (IPv6).
            short_name = parts.scheme == "http" and host.replace("-", "_").isidentifier()
            if short_name and host != "localhost" and not rendering.exists("Service", host):
                yield f"{ident(config)}: {setting} names Service/{host}, absent"


def _service_monitor(rendering: Rendering, monitor: Obj) -> Iterator[str]:
    selector = monitor["spec"].get("selector")
    matched = [s for s in rendering.services if selector_matches(selector, s["metadata"]["labels"])]
    if not matched:
        yield f"{ident(monitor)}: selector matches no Service"
    ports = {port.get("name") for s in matched for port in s["spec"].get("ports", [])}
    for endpoint in monitor["spec"].get("endpoints", []):
        if endpoint.get("port") not in ports:
            yield f"{ident(monitor)}: endpoint port '{endpoint.get('port')}' is on no Service"


def _pod(rendering: Rendering, obj: Obj) -> Iterator[str]:
    """What a workload's pods use: their ServiceAccount, volumes, and each container's."""
    spec = pod_spec(obj)
    if spec is None:
        return
    account = spec.get("serviceAccountName")
    if account and not rendering.exists("ServiceAccount", account):
        yield f"{ident(obj)}: ServiceAccount/{account} is absent"
    volumes = spec.get("volumes", []) or []
    for volume in volumes:
        yield from _volume(rendering, obj, volume)
    claim_templates = obj["spec"].get("volumeClaimTemplates", []) or []
    volume_names = {v["name"] for v in volumes} | {t["metadata"]["name"] for t in claim_templates}
    for container in containers(spec):
        yield from _container(rendering, obj, container, volume_names)


def _volume(rendering: Rendering, obj: Obj, volume: Obj) -> Iterator[str]:
    for field, kind, name_field in (
        ("configMap", "ConfigMap", "name"),
        ("secret", "Secret", "secretName"),
        ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName"),
    ):
        name = rendering.absent(volume.get(field), kind, name_field)
        if name is not None:
            yield f"{ident(obj)}: {kind}/{name} is absent"


def _container(
    rendering: Rendering, obj: Obj, container: Obj, volume_names: set[str]
) -> Iterator[str]:
    where = f"{ident(obj)} container {container['name']}"
    for source in container.get("envFrom", []) or []:
        for field, kind in ENV_REFERENCES:
            name = rendering.absent(source.get(field), kind)
            if name is not None:
                yield f"{where}: {kind}/{name} is absent"
    for variable in container.get("env", []) or []:
        value_from = variable.get("valueFrom", {}) or {}
        for field, kind in ENV_KEY_REFERENCES:
            name = rendering.absent(value_from.get(field), kind)
            if name is not None:
                yield f"{where}: {kind}/{name} is absent"
    for mount in container.get("volumeMounts", []) or []:
        if mount["name"] not in volume_names:
            yield f"{where}: mounts undefined volume '{mount['name']}'"
    named_ports = _port_names(container)
    for probe in PROBES:
        port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
        if isinstance(port, str) and port not in named_ports:
            yield f"{where}: {probe} uses unknown port '{port}'"
