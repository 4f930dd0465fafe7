"""The reference and rule checks of ``deploy/check`` on a small rendering, without kustomize.

A rendering that follows every rule and whose references all resolve passes; each breakage
below (one reference that points nowhere, one rule broken) is reported, and only it. The
end-to-end checks in test_deploy.py run the same code on the real renderings.
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHECKS = Path(__file__).resolve().parents[2] / "deploy" / "check"
sys.path.insert(0, str(CHECKS))  # the checks import each other as scripts beside each other
references = importlib.import_module("references")
rules = importlib.import_module("rules")
exposure = importlib.import_module("exposure")

Obj = dict[str, Any]
SECURE_CONTAINER = {
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
HTTP_PROBE = {"httpGet": {"path": "/healthz", "port": "http"}}


def deployment(name: str, **spec: Any) -> Obj:
    container = {
        "name": name,
        "ports": [{"name": "http", "containerPort": 8000}],
        "securityContext": dict(SECURE_CONTAINER),
        "resources": copy.deepcopy(RESOURCES),
        "livenessProbe": HTTP_PROBE,
        "readinessProbe": HTTP_PROBE,
        "startupProbe": HTTP_PROBE,
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "secrets", "key": "k"}}},
        ],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "serviceAccountName": "recsys",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "settings", "configMap": {"name": "settings"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    ],
                },
            },
        },
    }


def named(kind: str, name: str, **fields: Any) -> Obj:
    return {"kind": kind, "metadata": {"name": name, "labels": {"app": name}}, **fields}


def rendering() -> list[Obj]:
    """A recommender with everything that refers to it, and a beat: every check passes."""
    return [
        deployment("recommender"),
        deployment("beat", replicas=1, strategy={"type": "Recreate"}),
        named(
            "Service",
            "recommender",
            spec={
                "selector": {"app": "recommender"},
                "ports": [{"name": "http", "targetPort": "http"}],
            },
        ),
        named(
            "HorizontalPodAutoscaler",
            "recommender",
            spec={"scaleTargetRef": {"kind": "Deployment", "name": "recommender"}},
        ),
        named(
            "PodDisruptionBudget",
            "recommender",
            spec={
                "selector": {
                    "matchExpressions": [
                        {"key": "app", "operator": "In", "values": ["recommender"]}
                    ]
                }
            },
        ),
        named(
            "ServiceMonitor",
            "recommender",
            spec={
                "selector": {"matchLabels": {"app": "recommender"}},
                "endpoints": [{"port": "http"}],
            },
        ),
        named(
            "Ingress",
            "gateway",
            spec={
                "rules": [{"http": {"paths": [{"backend": {"service": {"name": "recommender"}}}]}}]
            },
        ),
        named("ServiceAccount", "recsys"),
        named(
            "ConfigMap",
            "settings",
            data={"RECOMMENDER_URLS": "http://recommender:8101", "ARTIFACT_URL": "s3://b/p"},
        ),
        named("PersistentVolumeClaim", "data"),
    ]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def pod(objects: list[Obj], name: str = "recommender") -> Obj:
    spec: Obj = find(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj], name: str = "recommender") -> Obj:
    first: Obj = pod(objects, name)["containers"][0]
    return first


def name_of(value: object) -> str | None:
    """A breakage's test id: its function's name (the expected message gets pytest's)."""
    return getattr(value, "__name__", "").strip("_") or None


def test_a_sound_rendering_passes_with_its_one_secret_external() -> None:
    objects = rendering()
    assert references.check_references(objects, {"Secret/secrets"}) == []
    assert rules.check_rules(objects) == []


def test_a_secret_created_outside_kustomize_must_be_named_external() -> None:
    problems = references.check_references(rendering(), set())
    assert problems == [
        f"Deployment/{name} container {name}: Secret/secrets is absent"
        for name in ("recommender", "beat")
    ]


def _rename_target_port(objects: list[Obj]) -> None:
    find(objects, "Service", "recommender")["spec"]["ports"][0]["targetPort"] = "htpp"


def _select_nothing(objects: list[Obj]) -> None:
    """(A numbered target port: a named one would also be reported, no pod having it.)"""
    spec = find(objects, "Service", "recommender")["spec"]
    spec["selector"] = {"app": "nobody"}
    spec["ports"][0]["targetPort"] = 8000


def _scale_absent(objects: list[Obj]) -> None:
    find(objects, "HorizontalPodAutoscaler", "recommender")["spec"]["scaleTargetRef"]["name"] = "x"


def _budget_for_nobody(objects: list[Obj]) -> None:
    selector = find(objects, "PodDisruptionBudget", "recommender")["spec"]["selector"]
    selector["matchExpressions"][0]["values"] = ["gateway"]


def _monitor_absent_port(objects: list[Obj]) -> None:
    find(objects, "ServiceMonitor", "recommender")["spec"]["endpoints"] = [{"port": "metrics"}]


def _ingress_to_nowhere(objects: list[Obj]) -> None:
    rule = find(objects, "Ingress", "gateway")["spec"]["rules"][0]
    rule["http"]["paths"][0]["backend"]["service"]["name"] = "api"


def _remove(kind: str, name: str) -> Callable[[list[Obj]], None]:
    def breakage(objects: list[Obj]) -> None:
        objects.remove(find(objects, kind, name))

    return breakage


def _url_to_nowhere(objects: list[Obj]) -> None:
    find(objects, "ConfigMap", "settings")["data"]["RECOMMENDER_URLS"] = (
        "http://recommender-pods:8101"
    )


def _mount_undefined(objects: list[Obj]) -> None:
    container(objects)["volumeMounts"].append({"name": "cache", "mountPath": "/cache"})


def _probe_unknown_port(objects: list[Obj]) -> None:
    container(objects)["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": "admin"}}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_rename_target_port, "Service/recommender: targetPort 'htpp' is no container port"),
        (_select_nothing, "Service/recommender: selector {'app': 'nobody'} matches no pod"),
        (_scale_absent, "HorizontalPodAutoscaler/recommender: scales Deployment/x, absent"),
        (_budget_for_nobody, "PodDisruptionBudget/recommender: selector matches no pod template"),
        (_monitor_absent_port, "ServiceMonitor/recommender: endpoint port 'metrics' is on no"),
        (_ingress_to_nowhere, "Ingress/gateway: backend Service/api is absent"),
        (_url_to_nowhere, "ConfigMap/settings: RECOMMENDER_URLS names Service/recommender-pods"),
        (_mount_undefined, "container recommender: mounts undefined volume 'cache'"),
        (_probe_unknown_port, "container recommender: readinessProbe uses unknown port 'admin'"),
    ],
    ids=name_of,
)
def test_a_reference_that_points_nowhere_is_reported(
    breakage: Callable[[list[Obj]], None], expected: str
) -> None:
    objects = rendering()
    breakage(objects)
    problems = references.check_references(objects, {"Secret/secrets"})
    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("ServiceAccount", "recsys", "ServiceAccount/recsys is absent"),
        ("ConfigMap", "settings", "ConfigMap/settings is absent"),
        ("PersistentVolumeClaim", "data", "PersistentVolumeClaim/data is absent"),
    ],
)
def test_what_every_pod_uses_must_exist(kind: str, name: str, expected: str) -> None:
    objects = rendering()
    _remove(kind, name)(objects)
    problems = references.check_references(objects, {"Secret/secrets"})
    assert problems, kind
    assert all(expected in problem for problem in problems), problems
    # Both Deployments use it; the ConfigMap twice in each (a volume and envFrom).
    assert len(problems) == (4 if kind == "ConfigMap" else 2), problems


def test_an_optional_reference_needs_nothing() -> None:
    objects = rendering()
    _remove("ConfigMap", "settings")(objects)
    for name in ("recommender", "beat"):
        pod(objects, name)["volumes"][1]["configMap"]["optional"] = True
        container(objects, name)["envFrom"][0]["configMapRef"]["optional"] = True
    assert references.check_references(objects, {"Secret/secrets"}) == []


def _root_pod(objects: list[Obj]) -> None:
    pod(objects)["securityContext"]["runAsNonRoot"] = False


def _token_mounted(objects: list[Obj]) -> None:
    del pod(objects)["automountServiceAccountToken"]


def _writable_root(objects: list[Obj]) -> None:
    container(objects)["securityContext"]["readOnlyRootFilesystem"] = False


def _no_memory_limit(objects: list[Obj]) -> None:
    del container(objects)["resources"]["limits"]["memory"]


def _no_liveness(objects: list[Obj]) -> None:
    del container(objects)["livenessProbe"]


def _scratch_outside_tmp(objects: list[Obj]) -> None:
    container(objects)["volumeMounts"][0]["mountPath"] = "/var/cache"


def _no_startup_probe(objects: list[Obj]) -> None:
    del container(objects)["startupProbe"]


def _two_beats(objects: list[Obj]) -> None:
    find(objects, "Deployment", "beat")["spec"]["replicas"] = 2


def _rolling_beat(objects: list[Obj]) -> None:
    find(objects, "Deployment", "beat")["spec"]["strategy"] = {"type": "RollingUpdate"}


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_root_pod, "Deployment/recommender: pod securityContext.runAsNonRoot is not true"),
        (_token_mounted, "Deployment/recommender: automountServiceAccountToken is not false"),
        (_writable_root, "container recommender: readOnlyRootFilesystem is not true"),
        (_no_memory_limit, "container recommender: no memory limits"),
        (_no_liveness, "container recommender: no livenessProbe"),
        (_scratch_outside_tmp, "writable emptyDir at /var/cache, not /tmp"),
        (_no_startup_probe, "Deployment/recommender: the recommender needs a startupProbe"),
        (_two_beats, "Deployment/beat: beat must run exactly 1 replica"),
        (_rolling_beat, "Deployment/beat: beat must use the Recreate strategy"),
    ],
    ids=name_of,
)
def test_a_broken_rule_is_reported(breakage: Callable[[list[Obj]], None], expected: str) -> None:
    objects = rendering()
    breakage(objects)
    problems = rules.check_rules(objects)
    assert len(problems) == 1, problems
    assert expected in problems[0]


# ── the Ingress passes on what the gateway accepts ──────────────────────────────────────────
def _api_ingress(annotations: dict[str, str] | None = None) -> Obj:
    path = {"path": "/v1", "pathType": "Prefix"}
    ingress = named("Ingress", "gateway", spec={"rules": [{"http": {"paths": [path]}}]})
    if annotations is not None:
        ingress["metadata"]["annotations"] = annotations
    return ingress


def _settings(**data: str) -> Obj:
    return named("ConfigMap", "recsys-config-5f2k", data=data)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1m", 1024**2), ("512k", 512 * 1024), ("2G", 2 * 1024**3), ("4096", 4096), ("0", 0)],
)
def test_nginx_sizes_are_read_in_nginx_units(text: str, size: int) -> None:
    assert exposure.nginx_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5m", "lots", "m"])
def test_an_unreadable_nginx_size_is_none(text: str) -> None:
    assert exposure.nginx_size(text) is None


@pytest.mark.parametrize(
    ("annotations", "settings"),
    [
        (None, {}),  # both defaults: 1m and 1 MiB
        ({exposure.BODY_SIZE_ANNOTATION: "8m"}, {"MAX_BODY_BYTES": "8388608"}),
        ({exposure.BODY_SIZE_ANNOTATION: "0"}, {"MAX_BODY_BYTES": "8388608"}),  # no limit
    ],
)
def test_an_ingress_passing_every_body_the_gateway_accepts_passes(
    annotations: dict[str, str] | None, settings: dict[str, str]
) -> None:
    assert exposure.check_exposure([_api_ingress(annotations), _settings(**settings)]) == []


@pytest.mark.parametrize(
    ("annotations", "settings", "expected"),
    [
        (None, {"MAX_BODY_BYTES": "2097152"}, "1m (1048576 bytes) is below"),
        ({exposure.BODY_SIZE_ANNOTATION: "512k"}, {}, "512k (524288 bytes) is below"),
        ({exposure.BODY_SIZE_ANNOTATION: "big"}, {}, "'big' is not an nginx size"),
        (None, {"MAX_BODY_BYTES": "1MiB"}, "'1MiB' in recsys-config is not a number"),
    ],
)
def test_an_ingress_refusing_bodies_the_gateway_accepts_is_reported(
    annotations: dict[str, str] | None, settings: dict[str, str], expected: str
) -> None:
    problems = exposure.check_exposure([_api_ingress(annotations), _settings(**settings)])

    assert len(problems) == 1, problems
    assert problems[0].startswith("Ingress/gateway: ")
    assert expected in problems[0]


def test_the_checks_default_is_the_gateways() -> None:
    from gateway.config import Settings

    default = Settings.model_fields["max_body_bytes"].default
    assert default == exposure.GATEWAY_DEFAULT_MAX_BODY_BYTES


# ── the recommender's model memory ───────────────────────────────────────────────────────
memory = importlib.import_module("memory")


def _recommender(limit: str, env: dict[str, str] | None = None) -> list[Obj]:
    objects = [deployment("recommender"), _settings(**(env or {}))]
    recommender = container(objects)
    recommender["resources"]["limits"]["memory"] = limit
    return objects


@pytest.mark.parametrize(
    ("text", "size"), [("2Gi", 2**31), ("1536Mi", 1536 * 2**20), ("2G", 2 * 10**9), ("512", 512)]
)
def test_memory_quantities_are_read_in_kubernetes_units(text: str, size: int) -> None:
    assert memory.quantity_bytes(text) == size


@pytest.mark.parametrize(
    ("limit", "settings", "expected"),
    [
        ("2Gi", {}, "MODEL_MEMORY_LIMIT_MB 4096 exceeds 75% of the memory limit 2Gi (1536"),
        ("2Gi", {"MODEL_MEMORY_LIMIT_MB": "1600"}, "MODEL_MEMORY_LIMIT_MB 1600 exceeds"),
        ("2Gi", {"MODEL_MEMORY_LIMIT_MB": "1.5G"}, "'1.5G' is not a number of MiB"),
        ("2Gi", {"MODEL_MEMORY_LIMIT_MB": "1536"}, None),
        ("8Gi", {}, None),  # the default fits
    ],
)
def test_the_model_memory_guard_must_fit_the_recommenders_limit(
    limit: str, settings: dict[str, str], expected: str | None
) -> None:
    problems = memory.check_model_memory(_recommender(limit, settings))

    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        assert problems[0].startswith("Deployment/recommender container recommender: ")
        assert expected in problems[0]


def test_the_containers_own_setting_wins_over_the_configmap() -> None:
    objects = _recommender("2Gi", {"MODEL_MEMORY_LIMIT_MB": "4096"})
    container(objects)["env"].append({"name": "MODEL_MEMORY_LIMIT_MB", "value": "1024"})
    assert memory.check_model_memory(objects) == []


def test_the_memory_checks_default_is_the_recommenders() -> None:
    from recommender.config import Settings

    default = Settings.model_fields["model_memory_limit_mb"].default
    assert default == memory.RECOMMENDER_DEFAULT_MODEL_MEMORY_MB
