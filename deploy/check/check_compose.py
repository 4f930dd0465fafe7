"""Check what `docker compose config` cannot: docker-compose.yml's files, links and safe defaults.

    python deploy/check/check_compose.py --prometheus PROMETHEUS_YML --dashboards DIR \\
        --compose-file docker-compose.yml --env-example .env.example \\
        --cluster RESOLVED_CLUSTER.yaml RESOLVED.yaml

RESOLVED.yaml is the output of `docker compose config` (or `docker-compose config`) with
.env.example and the secrets it leaves empty; RESOLVED_CLUSTER.yaml the same with
deploy/compose/cluster.yml and the profile "cluster". Compose has already parsed and
schema-validated them. This checks, on top, in both:

- every build context and Dockerfile, and every bind-mounted host path, exists; every image
  built from deploy/docker/Dockerfile names, in its SERVICE build argument, a stage
  ``run-<SERVICE>`` of that file with a HEALTHCHECK;
- every `depends_on: condition: service_healthy` points at a service with a health check
  (its own, or the HEALTHCHECK of the stage it is built from); every one-shot service
  (`restart: "no"`) is waited for by another with `service_completed_successfully`, without
  which `docker compose up --wait` fails once it exits;
- safe defaults: every published port is bound to the loopback interface; every recsys
  service runs with ENVIRONMENT=production; Celery's broker (CELERY_BROKER_URL) is never a
  cluster URL;
- every Prometheus scrape target and the Grafana datasource name a compose service; every
  dashboard JSON parses and has a uid, a title and panels.

In RESOLVED_CLUSTER.yaml, every service with a REDIS_URL uses the cluster and waits for
the cluster's init. And .env.example carries no secret: every variable the compose file
requires (``${NAME:?...}``) is there and empty, no development key (``dev-``) and no
ENVIRONMENT=development appear in it at all.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

Service = dict[str, Any]
#: Images of this repository: their services read the recsys settings.
RECSYS_IMAGE = re.compile(r"^recsys/")
REQUIRED_VARIABLE = re.compile(r"\$\{(\w+):\?")


def bind_sources(service: Service) -> list[str]:
    sources = []
    for volume in service.get("volumes", []) or []:
        if isinstance(volume, dict):  # long syntax (compose v2)
            if volume.get("type") == "bind":
                sources.append(volume["source"])
        else:  # short syntax (docker-compose 1.x): SOURCE:TARGET[:MODE]
            source = str(volume).split(":", 1)[0]
            if source.startswith(("/", ".")):
                sources.append(source)
    return sources


def dockerfile_stages(path: Path) -> dict[str, str]:
    """Each stage's name (``FROM ... AS name``) and text, up to the next FROM."""
    stages: dict[str, str] = {}
    name = ""
    for line in path.read_text().splitlines():
        match = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            name = match.group(1) or ""
            stages[name] = ""
        elif name:
            stages[name] += line + "\n"
    return stages


def built_stage(service: Service) -> str | None:
    """The text of the Dockerfile stage a service's image ends with, None if not built."""
    build = service.get("build")
    if not isinstance(build, dict):
        return None
    dockerfile = Path(build.get("context", ".")) / build.get("dockerfile", "Dockerfile")
    if not dockerfile.is_file():
        return None
    target = (build.get("args") or {}).get("SERVICE")
    stages = dockerfile_stages(dockerfile)
    if target is None:  # a Dockerfile of one stage
        return dockerfile.read_text()
    return stages.get(f"run-{target}")


def has_healthcheck(service: Service) -> bool:
    check = service.get("healthcheck")
    if check:
        return not check.get("disable", False)
    stage = built_stage(service)
    return stage is not None and "\nHEALTHCHECK " in f"\n{stage}"


def environment(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE items
        return dict(str(item).partition("=")[::2] for item in env)
    return {str(key): str(value) for key, value in env.items()}


def host_ips(service: Service) -> list[tuple[str, str]]:
    """(published port, host address) of every published port; "" is every interface."""
    published = []
    for port in service.get("ports", []) or []:
        if isinstance(port, dict):  # long syntax
            published.append((str(port.get("published", "")), str(port.get("host_ip", ""))))
            continue
        # short syntax: [HOST_IP:]PUBLISHED:TARGET[/PROTO]
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            published.append((parts[1], parts[0].strip("[]")))
        elif len(parts) == 2:
            published.append((parts[0], ""))
        else:  # TARGET alone: a random port on every interface
            published.append(("(random)", ""))
    return published


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_files_and_links(services: dict[str, Service]) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            context = Path(build.get("context", "."))
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            target = (build.get("args") or {}).get("SERVICE")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
            elif target is not None and built_stage(service) is None:
                problems.append(f"{name}: SERVICE={target}: no stage run-{target} in {dockerfile}")
        problems.extend(
            f"{name}: bind-mounted {source} does not exist"
            for source in bind_sources(service)
            if not Path(source).exists()
        )
        depends = service.get("depends_on", {}) or {}
        if isinstance(depends, dict):
            for other, condition in depends.items():
                if other not in services:
                    problems.append(f"{name}: depends on unknown service {other}")
                elif condition.get("condition") == "service_healthy" and not has_healthcheck(
                    services[other]
                ):
                    problems.append(f"{name}: waits for {other} to be healthy; it has no check")
    for name, service in services.items():
        if str(service.get("restart", "")) != "no":
            continue
        awaited = any(
            (other.get("depends_on") or {}).get(name, {}).get("condition")
            == "service_completed_successfully"
            for other in services.values()
            if isinstance(other.get("depends_on"), dict)
        )
        if not awaited:
            problems.append(
                f"{name}: runs once, but no service waits for it with "
                "service_completed_successfully (`up --wait` would fail when it exits)"
            )
    return problems


def check_safe_defaults(services: dict[str, Service]) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        for port, address in host_ips(service):
            if not is_loopback(address):
                where = f"on {address}" if address else "on every interface (0.0.0.0)"
                problems.append(f"{name}: publishes port {port} {where}, not 127.0.0.1")
        env = environment(service)
        recsys = RECSYS_IMAGE.match(str(service.get("image", "")))
        if recsys and env.get("ENVIRONMENT") != "production":
            problems.append(
                f"{name}: ENVIRONMENT={env.get('ENVIRONMENT', '(unset)')}, not production "
                "(production refuses the development keys)"
            )
        broker = env.get("CELERY_BROKER_URL", "")
        if "+cluster" in urlsplit(broker).scheme:
            problems.append(f"{name}: CELERY_BROKER_URL is a cluster URL; kombu needs one Redis")
    return problems


def check_cluster(services: dict[str, Service]) -> list[str]:
    problems: list[str] = []
    users = {name: s for name, s in services.items() if "REDIS_URL" in environment(s)}
    if not users:
        problems.append("no service has a REDIS_URL")
    for name, service in users.items():
        scheme = urlsplit(environment(service)["REDIS_URL"]).scheme
        if not scheme.endswith("+cluster"):
            problems.append(f"{name}: REDIS_URL is {scheme}://, not the cluster")
        condition = ((service.get("depends_on") or {}).get("redis-cluster-init") or {}).get(
            "condition"
        )
        if condition != "service_completed_successfully":
            problems.append(f"{name}: does not wait for redis-cluster-init to complete")
    return problems


def check_env_example(env_example: Path, compose_file: Path) -> list[str]:
    problems: list[str] = []
    text = env_example.read_text()
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    if "ENVIRONMENT=development" in text:
        problems.append(f"{env_example.name}: says ENVIRONMENT=development")
    if "dev-" in text:
        problems.append(f"{env_example.name}: names a development key (dev-...)")
    required = sorted(set(REQUIRED_VARIABLE.findall(compose_file.read_text())))
    if "API_KEYS" not in required:
        problems.append(f"{compose_file.name}: API_KEYS is not required (${{API_KEYS:?...}})")
    for variable in required:
        if variable not in values:
            problems.append(f"{env_example.name}: no {variable}= line for the required {variable}")
        elif values[variable]:
            problems.append(f"{env_example.name}: {variable} has a value; secrets stay empty")
    return problems


def check_monitoring(
    services: dict[str, Service], prometheus_yml: Path, dashboards: Path
) -> tuple[list[str], int]:
    problems: list[str] = []
    prometheus = yaml.safe_load(prometheus_yml.read_text())
    for job in prometheus.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host = target.rsplit(":", 1)[0]
                if host not in services and host not in {"127.0.0.1", "localhost"}:
                    problems.append(f"prometheus job {job['job_name']}: no service '{host}'")

    provisioning = prometheus_yml.parent.parent / "grafana" / "provisioning" / "datasources"
    for path in sorted(provisioning.glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            host = urlsplit(source.get("url", "")).hostname
            if host not in services:
                problems.append(f"{path.name}: datasource {source.get('name')} -> no '{host}'")

    boards = sorted(dashboards.glob("*.json"))
    if not boards:
        problems.append(f"{dashboards}: no dashboard JSON")
    for path in boards:
        try:
            board = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}: not JSON: {error}")
            continue
        missing = [key for key in ("uid", "title", "panels") if not board.get(key)]
        if missing:
            problems.append(f"{path.name}: no {', '.join(missing)}")
    return problems, len(boards)


def services_of(resolved: Path, profiles: set[str]) -> dict[str, Service]:
    """The services that start with these profiles on (docker-compose 1.x lists them all)."""
    config = yaml.safe_load(resolved.read_text()) or {}
    services: dict[str, Service] = config.get("services", {}) or {}
    return {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or profiles & set(service["profiles"])
    }


def report(label: str, problems: list[str], summary: str) -> bool:
    for problem in problems:
        sys.stdout.write(f"  - {problem}\n")
    sys.stdout.write(f"{'FAIL' if problems else 'ok  '} {label}: {summary}\n")
    return not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", type=Path, required=True)
    parser.add_argument("--dashboards", type=Path, required=True)
    parser.add_argument("--compose-file", type=Path, required=True)
    parser.add_argument("--env-example", type=Path, required=True)
    parser.add_argument("--cluster", type=Path, help="the resolved config with the cluster")
    parser.add_argument("resolved", type=Path)
    args = parser.parse_args(argv)

    services = services_of(args.resolved, set())
    monitoring, boards = check_monitoring(services, args.prometheus, args.dashboards)
    ok = report(
        args.compose_file.name,
        [*check_files_and_links(services), *check_safe_defaults(services), *monitoring],
        f"{len(services)} services, {boards} dashboard(s), files, links and safe defaults",
    )
    if args.cluster:
        cluster = services_of(args.cluster, {"cluster"})
        ok &= report(
            f"{args.compose_file.name} with the cluster",
            [
                *check_files_and_links(cluster),
                *check_safe_defaults(cluster),
                *check_cluster(cluster),
            ],
            f"{len(cluster)} services, every REDIS_URL on the cluster",
        )
    ok &= report(
        args.env_example.name,
        check_env_example(args.env_example, args.compose_file),
        "no secret, no development key or environment",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
