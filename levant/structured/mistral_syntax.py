"""Tool calling for Mistral models, in their own control-token syntax (mistral-common).

Boundary: a ``ToolSyntax`` over ``MistralTokenizer``. mistral-common renders tools
(``[AVAILABLE_TOOLS]``), calls and results; the model opens its calls with the
``[TOOL_CALLS]`` control token, followed by

- v2-v7 tokenizers: a JSON list ``[{"name": ..., "arguments": {...}}, ...]``;
- v11+ tokenizers: ``name[ARGS]{...}`` per call, each after its own ``[TOOL_CALLS]``.

The grammar follows mistral-common's (``mistral_common.guidance``) shape: free text,
optionally followed by calls (``auto``), calls only (``required``), text without
control tokens (``none``); but every call's arguments follow its parameters schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import ChatMessage, ToolCall
from levant.structured.grammar import json_lark
from levant.structured.json_schema import SchemaBundle
from levant.structured.syntax import OutputSpec, ParsedOutput
from levant.structured.tools import (
    FunctionTool,
    calls_array_schema,
    calls_from_json,
    new_tool_call_id,
)

__all__ = ["MistralToolParser", "MistralToolSyntax"]

_CONTENT = "content: (/(.|\\n)+/)+\nSAFE_WS: /[ \\t\\r\\n]{1,8}/\n"


class MistralToolSyntax:
    def __init__(self, tokenizer: MistralTokenizer) -> None:
        tool_calls = tokenizer.tool_calls_id
        if tool_calls is None:
            raise ValueError("this Mistral tokenizer has no [TOOL_CALLS] token")
        self.tokenizer = tokenizer
        self.tool_calls_id = tool_calls
        self.args_id = tokenizer.control_id("[ARGS]")
        """Set on v11+ tokenizers: calls are ``name[ARGS]{...}``, not a JSON list."""
        self.call_id_id = tokenizer.control_id("[CALL_ID]")

    def render(self, messages: Sequence[ChatMessage], spec: OutputSpec) -> list[int]:
        tools = [t.definition() for t in spec.tools]
        return self.tokenizer.render_chat(messages, tools or None)

    def grammar(self, spec: OutputSpec) -> str | None:
        tools = spec.callable_tools
        response = spec.response_schema
        response_lark = (
            None if response is None else json_lark(response, lenient=not spec.response_strict)
        )
        if not tools:
            if response_lark is not None:
                return f"start: {response_lark}\n"
            # tool_choice none: text without control tokens, so never [TOOL_CALLS].
            return None if not spec.tools else "start: content\n" + _CONTENT
        calls = self._calls_rules(tools, spec)
        if spec.tool_choice.mode == "required":
            start = "fcalls"
        elif response_lark is not None:  # the control token tells the branches apart
            start = f"fcalls | {response_lark}"
        else:
            start = "content | content? fcalls"
        return f"start: {start}\n{calls}{_CONTENT}"

    def _calls_rules(self, tools: Sequence[FunctionTool], spec: OutputSpec) -> str:
        tc = f"<[{self.tool_calls_id}]>"
        lenient = not all(t.strict for t in tools)
        if self.args_id is None:  # v2-v7: one JSON list after the control token
            bundle = SchemaBundle()
            schema = bundle.root(
                calls_array_schema(tools, bundle, parallel=spec.parallel_tool_calls)
            )
            return f"fcalls: {tc} SAFE_WS? {json_lark(schema, lenient=lenient)}\n"
        args = f"<[{self.args_id}]>"
        alternatives = " | ".join(
            f"({tc} SAFE_WS? {json.dumps(t.name)} {args} SAFE_WS? "
            f"{json_lark(t.arguments_schema, lenient=lenient)} SAFE_WS?)"
            for t in tools
        )
        repeat = "+" if spec.parallel_tool_calls else ""
        return f"fcalls: fcall{repeat}\nfcall: {alternatives}\n"

    def parser(self, spec: OutputSpec) -> MistralToolParser | None:
        return MistralToolParser(self) if spec.callable_tools else None


class MistralToolParser:
    """Text streams until ``[TOOL_CALLS]``; everything from there on is parsed at the end."""

    def __init__(self, syntax: MistralToolSyntax) -> None:
        self._syntax = syntax
        self._ids: list[int] | None = None  # from the first [TOOL_CALLS] on

    def push(self, token_ids: Sequence[int], text: str) -> str:
        if self._ids is not None:
            self._ids.extend(token_ids)
            return ""
        if self._syntax.tool_calls_id in token_ids:
            at = list(token_ids).index(self._syntax.tool_calls_id)
            self._ids = list(token_ids[at:])
        return text  # what the detokenizer let out so far is content (control tokens are not)

    def finish(self) -> ParsedOutput:
        if self._ids is None:
            return ParsedOutput("", [])
        try:
            return ParsedOutput("", self._calls(self._ids))
        except ValueError:  # cut short (max_tokens): the text is all there is
            return ParsedOutput(self._syntax.tokenizer.decode(self._ids), [])

    def _calls(self, ids: list[int]) -> list[ToolCall]:
        syntax = self._syntax
        decode = syntax.tokenizer.decode
        if syntax.args_id is None:
            return calls_from_json(json.loads(decode(ids[1:]).strip()))
        calls = []
        for segment in _split(ids, syntax.tool_calls_id):
            if syntax.args_id not in segment:
                raise ValueError("a call without [ARGS]")
            at = segment.index(syntax.args_id)
            head = segment[:at]
            if syntax.call_id_id is not None and syntax.call_id_id in head:
                head = head[: head.index(syntax.call_id_id)]
            arguments = json.loads(decode(segment[at + 1 :]).strip())
            if not isinstance(arguments, dict):
                raise ValueError("tool call arguments must be an object")
            name = decode(head).strip()
            calls.append(
                ToolCall(new_tool_call_id(), name, json.dumps(arguments, ensure_ascii=False))
            )
        if not calls:
            raise ValueError("no tool call")
        return calls


def _split(ids: list[int], separator: int) -> list[list[int]]:
    """The runs of ``ids`` after each ``separator``."""
    segments: list[list[int]] = []
    for token in ids:
        if token == separator:
            segments.append([])
        elif segments:
            segments[-1].append(token)
    return segments
