"""The recommender's model memory fits its pod, checked by validate_manifests.py beside the
other deploy rules.

A recommender holds the active version and a running experiment's variants, up to
MODEL_MEMORY_LIMIT_MB together (estimated from their artifacts before loading; a variant that
would not fit is refused and its users get popular items). That guard only works below the
container's memory limit: above it, the kernel kills the pod before the guard refuses
anything. So the setting (the container's env, else the ConfigMap recsys-config, else the
recommender's default) must leave at least a quarter of the limit to the process itself
(Python, numpy, the HTTP and Redis clients, a list's scores).
"""

from __future__ import annotations

from exposure import settings
from manifests import Obj, containers, ident, pod_spec

RECOMMENDER = "recommender"
#: The recommender's default MODEL_MEMORY_LIMIT_MB (recommender.config; a test holds the two
#: equal).
RECOMMENDER_DEFAULT_MODEL_MEMORY_MB = 4096
#: The share of the container's limit the models may take.
MODELS_SHARE = 0.75
_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def quantity_bytes(text: str) -> int | None:
    """Bytes of a Kubernetes memory quantity ("2Gi", "1536Mi", "2G", "2147483648")."""
    for suffix, unit in sorted(_UNITS.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            return int(number) * unit if number.isdigit() else None
    return int(text) if text.isdigit() else None


def check_model_memory(objects: list[Obj]) -> list[str]:
    """The problems of one rendering's recommender pods, one line each."""
    config = settings(objects)
    problems: list[str] = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None or obj["metadata"]["name"] != RECOMMENDER:
            continue
        for container in containers(spec):
            problem = _problem(container, config)
            if problem is not None:
                problems.append(f"{ident(obj)} container {container['name']}: {problem}")
    return problems


def _problem(container: Obj, config: dict[str, str]) -> str | None:
    limit_text = str(((container.get("resources") or {}).get("limits") or {}).get("memory", ""))
    limit = quantity_bytes(limit_text)
    if limit is None:
        return None  # no limit, or an unreadable one: rules.py reports a missing limit
    env = {str(e.get("name")): e.get("value") for e in container.get("env", []) or []}
    stated = env.get("MODEL_MEMORY_LIMIT_MB") or config.get("MODEL_MEMORY_LIMIT_MB")
    setting = str(stated or RECOMMENDER_DEFAULT_MODEL_MEMORY_MB)
    if not setting.isdigit():
        return f"MODEL_MEMORY_LIMIT_MB {setting!r} is not a number of MiB"
    allowed = int(limit * MODELS_SHARE) // 2**20
    if int(setting) > allowed:
        return (
            f"MODEL_MEMORY_LIMIT_MB {setting} exceeds {MODELS_SHARE:.0%} of the memory limit "
            f"{limit_text} ({allowed} MiB): the pod would be killed before the guard refuses "
            "a variant"
        )
    return None
