"""Validate response bodies against Mistral's public OpenAPI spec (shared/reference).

The spec's known erratum is applied: ``ChatCompletionResponse`` lists ``data``
as required, which neither Mistral's SDK nor its examples carry.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "mistral-openapi.yaml"
)
_URI = "urn:mistral-openapi"


@lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    spec = copy.deepcopy(spec)
    resp = spec["components"]["schemas"]["ChatCompletionResponse"]
    for part in resp.get("allOf", []):
        if "required" in part and "data" in part["required"]:
            part["required"] = [r for r in part["required"] if r != "data"]
    return spec


def validate(instance: Any, schema_name: str) -> None:
    """Raise jsonschema.ValidationError if ``instance`` does not match the named schema."""
    spec = _spec()
    registry: Registry[Any] = Registry().with_resource(
        _URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    schema = {"$ref": f"{_URI}#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(instance)
