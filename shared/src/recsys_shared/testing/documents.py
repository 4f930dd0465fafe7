"""Walking a parsed JSON or YAML document (an OpenAPI document, rendered manifests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def objects_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every object (dict) in ``node``, at any depth, ``node`` itself included."""
    if isinstance(node, list):
        for item in node:
            yield from objects_in(item)
    elif isinstance(node, dict):
        yield node
        for value in node.values():
            yield from objects_in(value)
