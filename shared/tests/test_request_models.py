"""Every request body refuses what its published JSON Schema refuses, and takes what it allows,
field by field, so a client's validator and ours agree. Two places once did not: pydantic's lax
mode read ``true`` as 1 and ``"3"`` as 3 where the document says number (a variant's
``"model_version": true`` was version 1), and a weight's bounds were published as ``ge`` and
``le``, which JSON Schema does not know (the document allowed any weight). A refused field is
named once, by its own path."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, get_args, get_origin

import jsonschema_rs
import pytest
from pydantic import BaseModel, BeforeValidator, ValidationError

from recsys_shared.schemas import (
    EventBatch,
    EventIn,
    ExperimentIn,
    InputModel,
    ItemBatch,
    ItemIn,
    ItemPatch,
    ItemWithId,
    ReplayRequest,
    RetrainRequest,
    VariantIn,
)
from recsys_shared.schemas.base import json_number

BOTH_VERSIONS = [{"model_version": 1, "weight": 0.5}, {"model_version": 2, "weight": 0.5}]
ITEM = {"item_id": "i", "title": "t", "categories": ["c"], "available": True}
EVENT = {"user_id": "u", "item_id": "i", "type": "rating", "value": 4.0}
#: A valid body of every request model; each of its fields is then given every probe in turn.
VALID: dict[type[BaseModel], dict[str, Any]] = {
    EventIn: EVENT,
    EventBatch: {"events": [EVENT]},
    ItemIn: {"title": "t", "categories": ["c"], "available": True},
    ItemWithId: ITEM,
    ItemBatch: {"items": [ITEM]},
    ItemPatch: {"title": "t", "categories": ["c"], "available": False},
    ExperimentIn: {
        "name": "x",
        "mode": "ab",
        "variants": BOTH_VERSIONS,
        "min_exposures": 100,
        "max_duration_seconds": 3600,
    },
    VariantIn: {"model_version": 1, "weight": 0.5},
    RetrainRequest: {"algorithm": "als", "force": True, "search": False},
    ReplayRequest: {"reason": "unknown_item", "limit": 5},
}
#: What each field is given in turn: every JSON type, and numbers in and out of common bounds.
PROBES = ("3", "", 3, 3.5, -1, 0.5, True, None, [], {}, ["a"])


def _request_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [InputModel]
    while pending:
        subclasses = pending.pop().__subclasses__()
        found += subclasses
        pending += subclasses
    return found


def _lax(annotation: Any, metadata: Sequence[Any] = ()) -> bool:
    """Whether a field of this type reads a boolean or a string as a number (an int or float
    without the ``json_number`` check, at any depth of unions, lists and ``Annotated``)."""
    if annotation in (int, float):
        return not any(
            isinstance(check, BeforeValidator) and check.func is json_number for check in metadata
        )
    if get_origin(annotation) is Annotated:
        inner, *checks = get_args(annotation)
        return _lax(inner, checks)
    return any(_lax(argument) for argument in get_args(annotation))


def test_every_numeric_field_of_a_request_body_refuses_booleans_and_strings() -> None:
    models = _request_models()
    assert {EventIn, ExperimentIn, ReplayRequest, VariantIn} <= set(models)
    lax = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if _lax(field.annotation, field.metadata)
    ]
    assert lax == []


_NUMERIC_FIELDS = [
    (ReplayRequest, {}, "limit"),
    (VariantIn, {}, "model_version"),
    (VariantIn, {"model_version": 2}, "weight"),
    (EventIn, {"user_id": "u", "item_id": "i", "type": "rating"}, "value"),
    (ExperimentIn, {"name": "x", "mode": "ab", "variants": BOTH_VERSIONS}, "min_exposures"),
    (ExperimentIn, {"name": "x", "mode": "ab", "variants": BOTH_VERSIONS}, "max_duration_seconds"),
]


@pytest.mark.parametrize(
    ("given", "named"), [(True, "a boolean"), (False, "a boolean"), ("3", "a string")]
)
@pytest.mark.parametrize(("model", "rest", "field"), _NUMERIC_FIELDS)
def test_a_boolean_or_a_string_where_a_number_is_asked_is_refused_naming_the_field(
    model: type[BaseModel], rest: dict[str, Any], field: str, given: object, named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate_json(json.dumps({**rest, field: given}))
    [error] = refused.value.errors()
    assert error["loc"] == (field,)
    assert error["msg"].endswith(f"must be a number, not {named}")


def test_every_request_model_has_a_valid_body_here() -> None:
    assert set(VALID) == set(_request_models())


@pytest.mark.parametrize("model", list(VALID), ids=lambda model: model.__name__)
def test_a_request_model_takes_exactly_what_its_json_schema_allows(
    model: type[BaseModel],
) -> None:
    validator = jsonschema_rs.validator_for(model.model_json_schema())
    assert validator.is_valid(VALID[model])
    model.model_validate_json(json.dumps(VALID[model]))
    disagreements = []
    for field in model.model_fields:
        for probe in PROBES:
            body = {**VALID[model], field: probe}
            if validator.is_valid(body) != _takes(model, body):
                allowed = "allows" if validator.is_valid(body) else "refuses"
                disagreements.append(f"{field}={probe!r}: the schema {allowed} it, the model not")
    assert disagreements == []


def _takes(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError:
        return False
    return True


def test_numbers_themselves_are_still_taken() -> None:
    assert ReplayRequest.model_validate_json('{"limit": 5}').limit == 5
    variant = VariantIn.model_validate_json('{"model_version": 3, "weight": 1}')
    assert (variant.model_version, variant.weight) == (3, 1.0)


@pytest.mark.parametrize("model", list(VALID), ids=lambda model: model.__name__)
def test_a_refused_field_is_named_once_by_its_own_path(model: type[BaseModel]) -> None:
    """A client reads a problem's ``errors`` by field: a wrong value is one entry at the field's
    path (names and list indices), not one per branch of a union pydantic tried
    (``available.bool`` and ``available.none`` for a patch's ``"available": "no"``, once)."""
    field_names = {name for known in VALID for name in known.model_fields}
    unclear = []
    for field in model.model_fields:
        for probe in PROBES:
            try:
                model.model_validate_json(json.dumps({**VALID[model], field: probe}))
            except ValidationError as refused:
                paths = [error["loc"] for error in refused.errors()]
                steps = [step for path in paths for step in path if isinstance(step, str)]
                if len(paths) > 1 or not set(steps) <= field_names:
                    unclear.append(f"{field}={probe!r}: {paths}")
    assert unclear == []
