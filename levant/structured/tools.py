"""Function tools, the caller's tool choice, and tool-call ids: what every tool syntax shares.

Boundary: plain data, no wire format and no model. The API layer builds these from
either dialect's request; a ``ToolSyntax`` (``envelope.py``, ``mistral_syntax.py``)
turns them into prompt text, a grammar and parsed calls.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from levant.models.tokenizers.protocol import ToolCall
from levant.structured.json_schema import SchemaBundle

__all__ = [
    "FunctionTool",
    "ToolCall",
    "ToolChoice",
    "calls_from_json",
    "new_tool_call_id",
]

_ID_ALPHABET = string.ascii_letters + string.digits
ToolChoiceMode = Literal["auto", "none", "required"]


def new_tool_call_id() -> str:
    """Nine random alphanumeric characters: the only form Mistral's API accepts."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(9))


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """JSON schema of the arguments object; empty: any object."""
    strict: bool = False
    """Strict: every keyword of ``parameters`` must be enforceable (else a 400). Not strict:
    keywords the grammar engine cannot enforce are ignored."""

    def definition(self) -> dict[str, Any]:
        """The tool as chat templates and mistral-common take it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }

    @property
    def arguments_schema(self) -> dict[str, Any]:
        return dict(self.parameters) if self.parameters else {"type": "object"}


@dataclass(frozen=True)
class ToolChoice:
    """``auto``: the model decides; ``none``: text only; ``required``: at least one call
    (Mistral's ``any``), of ``function`` only when one is named."""

    mode: ToolChoiceMode = "auto"
    function: str | None = None

    def allowed(self, tools: Sequence[FunctionTool]) -> list[FunctionTool]:
        """The tools a call may use under this choice."""
        if self.mode == "none":
            return []
        if self.function is not None:
            return [t for t in tools if t.name == self.function]
        return list(tools)


def call_schema(tools: Sequence[FunctionTool], bundle: SchemaBundle) -> dict[str, Any]:
    """JSON schema of one ``{"name": ..., "arguments": {...}}`` call to any of ``tools``;
    their parameters schemas are embedded in ``bundle``."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": bundle.ref(t.arguments_schema)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def calls_array_schema(
    tools: Sequence[FunctionTool], bundle: SchemaBundle, *, parallel: bool
) -> dict[str, Any]:
    """A non-empty list of calls; exactly one when ``parallel`` is False."""
    schema: dict[str, Any] = {"type": "array", "items": call_schema(tools, bundle), "minItems": 1}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def calls_from_json(items: Any) -> list[ToolCall]:
    """Calls from a decoded ``[{"name", "arguments"}, ...]``, each with a fresh id.

    Raises ValueError when the shape is not that.
    """
    if not isinstance(items, list) or not items:
        raise ValueError("expected a non-empty list of tool calls")
    calls = []
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValueError("a tool call needs a name")
        arguments = item.get("arguments", {})
        if isinstance(arguments, str):  # already JSON text
            arguments = json.loads(arguments)
        if not isinstance(arguments, Mapping):
            raise ValueError("tool call arguments must be an object")
        calls.append(
            ToolCall(new_tool_call_id(), item["name"], json.dumps(arguments, ensure_ascii=False))
        )
    return calls
