"""Check what `docker compose config` cannot: that docker-compose.yml's files and links exist.

    python deploy/check/check_compose.py RESOLVED.yaml PROMETHEUS_YML DASHBOARDS_DIR

RESOLVED.yaml is the output of `docker compose config` (or `docker-compose config`), which
has already parsed and schema-validated the file. This checks, on top:

- every build context and Dockerfile, and every bind-mounted host path, exists;
- every `depends_on: condition: service_healthy` points at a service with a health check
  (its own, or the HEALTHCHECK of the Dockerfile it is built from);
- every Prometheus scrape target and the Grafana datasource name a compose service;
- every dashboard JSON parses and has a uid, a title and panels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


def bind_sources(service: dict[str, Any]) -> list[str]:
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


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check:
        return not check.get("disable", False)
    build = service.get("build")
    if isinstance(build, dict):
        dockerfile = Path(build.get("context", ".")) / build.get("dockerfile", "Dockerfile")
        return dockerfile.is_file() and "\nHEALTHCHECK " in dockerfile.read_text()
    return False


def main(argv: list[str]) -> int:
    resolved, prometheus_yml, dashboards = Path(argv[0]), Path(argv[1]), Path(argv[2])
    config = yaml.safe_load(resolved.read_text())
    services: dict[str, Any] = config.get("services", {})
    problems: list[str] = []

    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            context = Path(build.get("context", "."))
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
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

    for problem in problems:
        sys.stdout.write(f"  - {problem}\n")
    sys.stdout.write(
        f"{'FAIL' if problems else 'ok  '} docker-compose.yml: {len(services)} services, "
        f"{len(boards)} dashboard(s), files and links checked\n"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
