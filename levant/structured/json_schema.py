"""Composing several client JSON schemas into one, without breaking their ``$ref``s.

Boundary: pure JSON-schema manipulation. A tool envelope nests every function's
parameters schema (and maybe the response schema) inside one document; each client
schema's local references (``#/$defs/X``, ``#``) point at its own root, so each is
moved under ``$defs`` of the combined root and its references are rewritten to match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaBundle"]

_DROPPED_AT_ROOT = ("$schema", "$id")


class SchemaBundle:
    """Collects embedded schemas; ``ref`` returns a reference to use in the composite."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def ref(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        key = f"levant_{len(self.defs)}"
        root = {k: v for k, v in schema.items() if k not in _DROPPED_AT_ROOT}
        self.defs[key] = _rewrite(root, f"#/$defs/{key}")
        return {"$ref": f"#/$defs/{key}"}

    def root(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """``schema`` as the document root, carrying every embedded schema."""
        return {**schema, "$defs": dict(self.defs)} if self.defs else dict(schema)


def _rewrite(node: Any, base: str) -> Any:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                out[key] = base + value[1:]
            else:
                out[key] = _rewrite(value, base)
        return out
    if isinstance(node, list):
        return [_rewrite(v, base) for v in node]
    return node
