"""The deployment checks run in `make test`, and they can fail.

``scripts/check-deploy.sh`` renders every overlay with every subset of components, validates
the objects against the Kubernetes schemas and the repository's rules, runs checkov, parses
docker-compose.yml with a real compose (alone and with the cluster profile) and lints the YAML.
The first test runs all of it on the repository once, keeping what it rendered; the next ones
read those renderings and assert the safe defaults directly. The last ones break a copy of a
deployment file in one way each (most of them back to what it was before the safe defaults)
and run the part of the check that must then fail and say why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from recsys_shared.testing.documents import objects_in
from recsys_shared.testing.fixtures import BESIDE_THE_REST
from recsys_shared.testing.scripts import run_script

# Busy for one to two minutes (kustomize, checkov, compose): beside the unit tests.
pytestmark = BESIDE_THE_REST

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-deploy.sh"
K8S = ROOT / "deploy" / "k8s"
DOCS_PATHS = {"/docs", "/redoc", "/openapi.json"}
#: Services of compose that read the data (REDIS_URL); those that also use Celery.
DATA_SERVICES = {"feature-store", "recommender1", "recommender2", "gateway", "worker", "beat"}
CELERY_SERVICES = {"gateway", "worker", "beat"}


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, cwd=ROOT, timeout=900, **env)


@dataclass
class Checked:
    output: str
    returncode: int
    renders: Path

    def manifests(self) -> dict[str, list[dict[str, Any]]]:
        """Every Kubernetes rendering by name (overlay+component+...), as objects."""
        return {
            path.stem: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(self.renders.glob("*.yaml"))
            if not path.name.startswith("compose")
        }

    def compose(self, name: str) -> dict[str, Any]:
        config = yaml.safe_load((self.renders / f"{name}.yaml").read_text())
        assert isinstance(config, dict)
        services: dict[str, Any] = config["services"]
        return services


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """The whole check, once per module: every test that reads its renderings may be the
    first to run (-k), so each has the whole check's time limit."""
    renders = tmp_path_factory.mktemp("rendered")
    result = run_check(RENDER_DIR=str(renders))
    return Checked(result.stdout + result.stderr, result.returncode, renders)


def own_components(overlay: Path) -> set[str]:
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    return {Path(path).name for path in kustomization.get("components") or []}


#: The whole check's time limit: its first run on a new machine installs the tools.
WHOLE_CHECK = pytest.mark.timeout(900)


@WHOLE_CHECK
def test_every_deploy_check_passes(checked: Checked) -> None:
    assert checked.returncode == 0, checked.output
    assert "all deploy checks passed" in checked.output
    # Every overlay, alone and with every subset of the components it does not include itself.
    overlays = [d for d in (K8S / "overlays").iterdir() if d.is_dir()]
    components = {d.name for d in (K8S / "components").iterdir() if d.is_dir()}
    expected = sum(2 ** len(components - own_components(overlay)) for overlay in overlays)
    rendered = re.findall(r"^ok {3}\S+ \(\d+ objects\)$", checked.output, re.MULTILINE)
    assert len(rendered) == expected >= 48, checked.output
    assert len(checked.manifests()) == expected
    assert "refuses to start without API_KEYS" in checked.output


def published_addresses(service: dict[str, Any]) -> list[str]:
    """The host address of each published port, in either syntax compose prints."""
    addresses = []
    for port in service.get("ports", []) or []:
        if isinstance(port, dict):
            addresses.append(str(port.get("host_ip", "0.0.0.0")))  # noqa: S104 - what it means
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            addresses.append(parts[0] if len(parts) == 3 else "0.0.0.0")  # noqa: S104
    return addresses


@WHOLE_CHECK
@pytest.mark.parametrize("render", ["compose", "compose-cluster"])
def test_compose_publishes_nothing_beyond_this_host(checked: Checked, render: str) -> None:
    services = checked.compose(render)
    published = {name: published_addresses(s) for name, s in services.items() if s.get("ports")}
    assert {"gateway", "prometheus", "grafana"} <= set(published), published
    assert all(address == "127.0.0.1" for ports in published.values() for address in ports), (
        published
    )


@WHOLE_CHECK
def test_compose_runs_production_settings(checked: Checked) -> None:
    services = checked.compose("compose")
    environments = {name: services[name]["environment"]["ENVIRONMENT"] for name in DATA_SERVICES}
    assert set(environments.values()) == {"production"}, environments


def test_env_example_carries_no_key_and_no_development_environment() -> None:
    text = (ROOT / ".env.example").read_text()
    assert "ENVIRONMENT=development" not in text
    assert "dev-" not in text
    assert env_file(text)["API_KEYS"] == ""


def env_file(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_the_documented_env_setup_fills_every_secret_compose_requires(tmp_path: Path) -> None:
    """docs/deploy.md's one-liner, run as a user runs it on a copy of .env.example, leaves no
    variable empty that compose refuses to start without (``${NAME:?...}``)."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    [setup] = [
        block for block in re.findall(r"```bash\n(.*?)```", doc, re.S) if ".env.example" in block
    ]
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")

    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", setup], cwd=tmp_path, check=True, capture_output=True
    )

    compose = "".join(
        path.read_text()
        for path in [ROOT / "docker-compose.yml", *ROOT.glob("deploy/compose/*.yml")]
    )
    required = set(re.findall(r"\$\{([A-Z_]+):\?", compose))
    values = env_file((tmp_path / ".env").read_text())
    assert {"API_KEYS", "REDIS_PASSWORD"} <= required
    assert sorted(name for name in required if not values.get(name)) == []


@WHOLE_CHECK
def test_compose_keeps_celery_on_its_own_redis_and_moves_the_data_with_the_profile(
    checked: Checked,
) -> None:
    single, cluster = checked.compose("compose"), checked.compose("compose-cluster")
    for services in (single, cluster):
        brokers = {
            urlsplit(services[n]["environment"]["CELERY_BROKER_URL"]) for n in CELERY_SERVICES
        }
        assert {(url.scheme, url.hostname) for url in brokers} == {("redis", "redis-broker")}
    single_urls = {urlsplit(single[n]["environment"]["REDIS_URL"]) for n in DATA_SERVICES}
    assert {(url.scheme, url.hostname) for url in single_urls} == {("redis", "redis")}
    for name in DATA_SERVICES:
        url = cluster[name]["environment"]["REDIS_URL"]
        assert url.startswith("redis+cluster://"), (name, url)
        seeds = url.rpartition("@")[2].split(",")
        assert seeds == [f"redis-node-{i}:6379" for i in range(6)], (name, url)
        assert cluster[name]["environment"]["EVENT_PARTITIONS"] == "12"
        waited = cluster[name]["depends_on"]["redis-cluster-init"]["condition"]
        assert waited == "service_completed_successfully", name
    nodes = [name for name in cluster if name.startswith("redis-node-")]
    assert len(nodes) == 6
    assert all(cluster[n]["profiles"] == ["cluster"] for n in [*nodes, "redis-cluster-init"])


def ingress_paths(objects: list[dict[str, Any]]) -> set[str]:
    return {
        path["path"]
        for obj in objects
        if obj["kind"] == "Ingress"
        for rule in obj["spec"]["rules"]
        for path in rule["http"]["paths"]
    }


def settings(objects: list[dict[str, Any]]) -> dict[str, str]:
    [config] = [
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("recsys-config")
    ]
    return dict(config)


@WHOLE_CHECK
def test_every_ingress_routes_only_the_api_unless_public_docs(checked: Checked) -> None:
    manifests = checked.manifests()
    assert manifests
    for name, objects in manifests.items():
        docs = "+public-docs" in name
        expected = {"/v1"} | (DOCS_PATHS if docs else set())
        assert ingress_paths(objects) == expected, name
        assert settings(objects)["DOCS_ENABLED"] == ("true" if docs else "false"), name


@WHOLE_CHECK
def test_every_prod_rendering_denies_traffic_by_default(checked: Checked) -> None:
    prod = {name: objs for name, objs in checked.manifests().items() if name.startswith("prod")}
    assert len(prod) == 16
    for name, objects in prod.items():
        policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
        assert "default-deny-all" in policies, name
        assert policies["default-deny-all"]["spec"]["podSelector"] == {}, name
        assert {"gateway", "recommender", "feature-store", "redis-clients"} <= set(policies), name


def env_of(objects: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    [obj] = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment
    ]
    container = obj["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable for variable in container.get("env", [])}


@WHOLE_CHECK
def test_the_redis_cluster_component_moves_the_data_and_keeps_celery_apart(
    checked: Checked,
) -> None:
    manifests = checked.manifests()
    with_cluster = {n: objs for n, objs in manifests.items() if "+redis-cluster" in n}
    assert len(with_cluster) == 24  # dev: 16 of 32 renderings, prod: 8 of 16
    for name, objects in manifests.items():
        clustered = name in with_cluster
        sets = [
            o
            for o in objects
            if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis-cluster"
        ]
        assert len(sets) == int(clustered), name
        for deployment in ("gateway", "recommender", "feature-store", "retraining-worker", "beat"):
            redis_url = env_of(objects, deployment)["REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert redis_url["key"] == ("redis-cluster-url" if clustered else "redis-url"), name
        for deployment in ("gateway", "retraining-worker", "beat"):
            broker = env_of(objects, deployment)["CELERY_BROKER_URL"]["valueFrom"]["secretKeyRef"]
            assert broker["key"] == "celery-broker-url"
            assert broker["optional"] is (not clustered), (name, deployment)
        if not clustered:
            assert "EVENT_PARTITIONS" not in settings(objects), name
            continue
        assert settings(objects)["EVENT_PARTITIONS"] == "12", name
        [nodes] = sets
        assert nodes["spec"]["replicas"] == 6
        assert nodes["spec"]["volumeClaimTemplates"], name
        kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
        assert {
            ("Service", "redis-cluster"),
            ("Job", "redis-cluster-init"),
            ("PodDisruptionBudget", "redis-cluster"),
            ("NetworkPolicy", "redis-cluster"),
        } <= kinds, name


def required_secret_keys(objects: list[dict[str, Any]]) -> set[str]:
    """The keys of ``recsys-secrets`` that anything in ``objects`` reads without ``optional``."""
    references = [node["secretKeyRef"] for node in objects_in(objects) if "secretKeyRef" in node]
    return {
        reference["key"]
        for reference in references
        if reference["name"] == "recsys-secrets" and not reference.get("optional")
    }


@WHOLE_CHECK
def test_the_documented_secret_commands_hold_every_key_prod_reads(checked: Checked) -> None:
    """Each ``kubectl create secret generic recsys-secrets`` of docs/deploy.md, followed as
    written, holds every key the prod renderings of its kind (with the redis-cluster
    component or without) read without ``optional``: a key it leaves out stops a pod."""
    required: dict[bool, set[str]] = {False: set(), True: set()}
    for name, objects in checked.manifests().items():
        if name.startswith("prod"):
            required["+redis-cluster" in name] |= required_secret_keys(objects)
    doc = (ROOT / "docs" / "deploy.md").read_text()
    commands = re.findall(r"create secret generic recsys-secrets((?:.*\\\n)*.*)", doc)
    assert len(commands) >= 3, commands
    for command in commands:
        keys = set(re.findall(r"--from-literal=([a-z-]+)=", command))
        clustered = "redis-cluster-url" in keys
        assert {"api-keys", "session-secret"} <= required[clustered]
        assert sorted(required[clustered] - keys) == [], sorted(keys)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: update this test with the manifests"
    path.write_text(text.replace(old, new, 1))


def break_unknown_field(deploy: Path) -> None:
    """A misspelt field: only a strict schema validation notices it."""
    edit(
        deploy / "k8s/base/gateway.yaml",
        "          imagePullPolicy: Always\n",
        "          imagePullPolicy: Always\n          imagePulPolicy: Always\n",
    )


def break_target_port(deploy: Path) -> None:
    """A Service whose named target port no container has: valid YAML, dead Service."""
    edit(deploy / "k8s/base/recommender.yaml", "targetPort: http", "targetPort: htpp")


def break_security_context(deploy: Path) -> None:
    """A writable root filesystem: against the rules of this repository."""
    edit(
        deploy / "k8s/base/feature-store.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
    )


def break_render(deploy: Path) -> None:
    """A resource the base lists but that does not exist: kustomize cannot build."""
    (deploy / "k8s/base/beat.yaml").unlink()


def route_everything(deploy: Path) -> None:
    """The Ingress as it was: every path, /metrics and /docs included."""
    edit(deploy / "k8s/base/gateway.yaml", "- path: /v1\n", "- path: /\n")


def prod_without_network_policies(deploy: Path) -> None:
    """prod as it was: the network policies left to the user."""
    edit(
        deploy / "k8s/overlays/prod/kustomization.yaml",
        "components:\n  - ../../components/network-policies\n",
        "",
    )


def ingress_body_below_the_gateways(deploy: Path) -> None:
    """The controller set to refuse bodies the gateway accepts."""
    edit(deploy / "k8s/base/gateway.yaml", "proxy-body-size: 1m", "proxy-body-size: 512k")


def docs_routed_but_not_enabled(deploy: Path) -> None:
    """The docs' paths routed while the gateway's DOCS_ENABLED stays false."""
    edit(
        deploy / "k8s/components/public-docs/kustomization.yaml",
        "- DOCS_ENABLED=true",
        "- LOG_LEVEL=INFO",
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("breakage", "rendered", "expected"),
    [
        (break_unknown_field, ("dev", "none"), "'imagePulPolicy' was unexpected"),
        (break_target_port, ("dev", "none"), "targetPort 'htpp' is no container port"),
        (break_security_context, ("dev", "none"), "readOnlyRootFilesystem is not true"),
        (break_render, ("dev", "none"), "FAIL dev"),
        (route_everything, ("dev,prod", "none"), "Ingress/gateway: routes ['/'], only ['/v1']"),
        (
            prod_without_network_policies,
            ("prod", "none"),
            "ENVIRONMENT=production without a default-deny NetworkPolicy",
        ),
        (
            docs_routed_but_not_enabled,
            ("dev", "public-docs"),
            "(the docs' paths need DOCS_ENABLED=true)",
        ),
        (ingress_body_below_the_gateways, ("dev", "none"), "is below the gateway's MAX_BODY"),
    ],
    ids=[
        "unknown-field",
        "target-port",
        "security-context",
        "render",
        "ingress-routes-everything",
        "prod-without-network-policies",
        "docs-not-enabled",
        "ingress-body-below-the-gateways",
    ],
)
def test_a_broken_manifest_fails_the_check(
    breakage: Callable[[Path], None], rendered: tuple[str, str], expected: str, tmp_path: Path
) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    breakage(copy)
    overlays, components = rendered
    result = run_check(
        DEPLOY_DIR=str(copy), CHECKS="render,validate", OVERLAYS=overlays, COMPONENTS=components
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output


def publish_everywhere(files: dict[str, Path]) -> None:
    """The gateway's port as it was: on every interface of the host."""
    edit(files["compose"], '"127.0.0.1:${GATEWAY_PORT:-8000}:8000"', '"${GATEWAY_PORT:-8000}:8000"')


def development_by_default(files: dict[str, Path]) -> None:
    edit(files["compose"], "${ENVIRONMENT:-production}", "${ENVIRONMENT:-development}")


def keys_by_default(files: dict[str, Path]) -> None:
    edit(
        files["compose"],
        "${API_KEYS:?set API_KEYS in .env (see .env.example)}",
        "${API_KEYS:-dev-client-key:client,dev-admin-key:admin}",
    )


def example_as_it_was(files: dict[str, Path]) -> None:
    """.env.example as it was: the development environment and keys."""
    edit(
        files["env"],
        "API_KEYS=\n",
        "ENVIRONMENT=development\nAPI_KEYS=dev-client-key:client,dev-admin-key:admin\n",
    )


def beat_left_on_one_redis(files: dict[str, Path]) -> None:
    """A service the cluster override forgets: it would write to the idle single Redis."""
    edit(files["cluster"], "  beat: *on-cluster\n", "")


def broker_on_the_cluster(files: dict[str, Path]) -> None:
    edit(
        files["cluster"],
        "    REDIS_URL: *cluster-url\n",
        "    REDIS_URL: *cluster-url\n    CELERY_BROKER_URL: *cluster-url\n",
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (publish_everywhere, "gateway: publishes port 8000 on every interface (0.0.0.0)"),
        (development_by_default, "gateway: ENVIRONMENT=development, not production"),
        (keys_by_default, "starts without API_KEYS"),
        (example_as_it_was, ".env.example: names a development key (dev-...)"),
        (example_as_it_was, ".env.example: says ENVIRONMENT=development"),
        (beat_left_on_one_redis, "beat: REDIS_URL is redis://, not the cluster"),
        (broker_on_the_cluster, "worker: CELERY_BROKER_URL is a cluster URL"),
    ],
    ids=[
        "published-everywhere",
        "development-by-default",
        "keys-by-default",
        "example-dev-keys",
        "example-development",
        "cluster-override-misses-beat",
        "broker-on-the-cluster",
    ],
)
def test_a_broken_compose_fails_the_check(
    breakage: Callable[[dict[str, Path]], None], expected: str, tmp_path: Path
) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    files = {
        "compose": tmp_path / "docker-compose.yml",
        "env": tmp_path / ".env.example",
        "cluster": copy / "compose" / "cluster.yml",
    }
    shutil.copy(ROOT / "docker-compose.yml", files["compose"])
    shutil.copy(ROOT / ".env.example", files["env"])
    breakage(files)
    result = run_check(
        DEPLOY_DIR=str(copy),
        CHECKS="compose",
        COMPOSE_YML=str(files["compose"]),
        ENV_EXAMPLE=str(files["env"]),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
