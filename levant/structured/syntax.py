"""The contracts between a request's output spec, a model's tool syntax and the serving loop.

Boundary: types only. ``OutputSpec`` is what the caller asked for (response format,
tools, tool choice); a ``ToolSyntax`` says how one family of models reads tools and
writes calls (prompt rendering, grammar, output parsing); an ``OutputParser`` splits
one generation into streamed content and tool calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from levant.models.tokenizers.protocol import ChatMessage, ToolCall
from levant.structured.tools import FunctionTool, ToolChoice

__all__ = ["OutputParser", "OutputSpec", "ParsedOutput", "ToolSyntax"]


@dataclass(frozen=True)
class OutputSpec:
    response_schema: Mapping[str, Any] | None = None
    """None: free text; ``{"type": "object"}``: json_object; otherwise a json_schema."""
    response_strict: bool = True
    """False (a json_schema with ``strict: false``): unenforceable keywords are ignored."""
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True

    @property
    def callable_tools(self) -> list[FunctionTool]:
        """The tools a call may use (none under ``tool_choice: none``)."""
        return self.tool_choice.allowed(self.tools)


@dataclass(frozen=True)
class ParsedOutput:
    content: str
    """Text not yet emitted (e.g. JSON that turned out not to be a call)."""
    calls: list[ToolCall]


class OutputParser(Protocol):
    def push(self, token_ids: Sequence[int], text: str) -> str:
        """Feed one delta (its token ids and its detokenized text); the content to emit now."""
        ...

    def finish(self) -> ParsedOutput:
        """After the last delta: what is left to emit, and the calls."""
        ...


class ToolSyntax(Protocol):
    def render(self, messages: Sequence[ChatMessage], spec: OutputSpec) -> list[int]:
        """Prompt ids for ``messages`` with the spec's tools (and any tool history)."""
        ...

    def grammar(self, spec: OutputSpec) -> str | None:
        """The Lark grammar (llguidance dialect) the output must follow; None: free."""
        ...

    def parser(self, spec: OutputSpec) -> OutputParser | None:
        """A parser for one generation, or None when it cannot contain calls."""
        ...
