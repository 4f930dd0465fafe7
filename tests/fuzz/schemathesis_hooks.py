"""Schemathesis hooks: the rules a JSON Schema cannot state.

An experiment's variants must name versions that exist (the fuzzed system has versions 1 and
2, see test_api_fuzz.py), each a different one, and their weights must fit the mode (in ``ab``
they sum to 1): cross-field rules. A generated experiment is made to follow them.

Events need no hook: an event's timestamp is bounded in the schema (a year from 1990 on), and
the clock's bound is a correction, not a refusal (``recsys_shared.schemas.base``).

So "valid by the schema" also means valid by the contract; every other part of each
generated body, valid or not, is sent as generated.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: The model versions the fuzzed system has.
VERSIONS = (1, 2)


def _weight_in_range(weight: Any) -> bool:
    return weight is None or (
        isinstance(weight, int | float) and not isinstance(weight, bool) and 0 <= weight <= 1
    )


def _experiment_rules(body: dict[str, Any]) -> None:
    variants = body.get("variants")
    mode = body.get("mode")
    if mode not in {"ab", "canary", "shadow"} or not isinstance(variants, list):
        return
    if len(variants) < 2 or not all(isinstance(variant, dict) for variant in variants):
        return
    versions = [variant.get("model_version") for variant in variants]
    weights = [variant.get("weight") for variant in variants]
    if not all(isinstance(version, int) for version in versions):
        return  # a negative case, sent as it is
    if not all(_weight_in_range(weight) for weight in weights):
        return
    del variants[len(VERSIONS) :]  # one variant per existing version
    for variant, version in zip(variants, VERSIONS, strict=True):
        variant["model_version"] = version
    if mode == "ab":
        variants[0]["weight"] = variants[1]["weight"] = 0.5
    elif weights[1] is not None and not 0 < weights[1] < 1:
        variants[1]["weight"] = 0.5


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and "variants" in body:
        _experiment_rules(body)
    return body
