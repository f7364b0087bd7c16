"""Tool calling for models whose chat template has no tool syntax: the JSON envelope.

Boundary: a ``ToolSyntax`` built on plain chat messages. The tool definitions go into
the system prompt; the model calls tools by answering with exactly

    {"tool_calls": [{"name": "<function>", "arguments": {...}}]}

which the grammar enforces (each ``arguments`` valid against its function's schema).
Under ``tool_choice: auto`` the grammar is "free text not starting with ``{``, or the
envelope", so the first character decides; with a JSON response format as well, the
answer is either the envelope or the response JSON. History is rendered the same way:
an assistant's calls as the envelope, tool results as a user message
``{"tool_results": [{"tool_call_id", "name", "content"}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from levant.models.tokenizers.protocol import ChatMessage, Tokenizer, ToolCall
from levant.structured.grammar import json_lark
from levant.structured.json_schema import SchemaBundle
from levant.structured.lead_parser import LeadingCallsParser
from levant.structured.syntax import OutputSpec
from levant.structured.tools import FunctionTool, calls_array_schema, calls_from_json

__all__ = ["EnvelopeParser", "EnvelopeSyntax"]

KEY = "tool_calls"
RESULTS_KEY = "tool_results"
# Free text may not start with "{" (that is the envelope) nor with blank space (so
# the first token decides which branch the answer is on).
_TEXT_TERMINAL = "TEXT: /[^{\\s](.|\\n)*/"


class EnvelopeSyntax:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: Sequence[ChatMessage], spec: OutputSpec) -> list[int]:
        out = rewrite_history(messages)
        tools = spec.callable_tools
        if tools:
            out = _with_system(out, instructions(tools, spec))
        return self.tokenizer.render_chat(out)

    def grammar(self, spec: OutputSpec) -> str | None:
        tools = spec.callable_tools
        response = spec.response_schema
        if not tools:
            if response is None:
                return None
            return "start: " + json_lark(response, lenient=not spec.response_strict)
        bundle = SchemaBundle()
        envelope = envelope_schema(tools, bundle, parallel=spec.parallel_tool_calls)
        lenient = not all(t.strict for t in tools)
        if spec.tool_choice.mode == "required":
            return "start: " + json_lark(bundle.root(envelope), lenient=lenient)
        if response is not None:
            either = {"anyOf": [envelope, bundle.ref(response)]}
            lenient = lenient or not spec.response_strict
            return "start: " + json_lark(bundle.root(either), lenient=lenient)
        body = json_lark(bundle.root(envelope), lenient=lenient)
        return f"start: TEXT | {body}\n{_TEXT_TERMINAL}\n"

    def parser(self, spec: OutputSpec) -> EnvelopeParser | None:
        if not spec.callable_tools:
            return None
        json_only = spec.tool_choice.mode == "required" or spec.response_schema is not None
        return EnvelopeParser(json_only=json_only)


def envelope_schema(
    tools: Sequence[FunctionTool], bundle: SchemaBundle, *, parallel: bool
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {KEY: calls_array_schema(tools, bundle, parallel=parallel)},
        "required": [KEY],
        "additionalProperties": False,
    }


class EnvelopeParser(LeadingCallsParser):
    """Content streams until the answer turns out to be JSON; JSON is held and, at the
    end, is either the envelope (calls) or content after all."""

    opener = "{"

    def __init__(self, *, json_only: bool) -> None:
        super().__init__(calls_only=json_only)

    def extract(self, text: str) -> list[ToolCall] | None:
        value = json.loads(text)
        if isinstance(value, dict) and set(value) == {KEY}:
            return calls_from_json(value[KEY])
        return None


def instructions(tools: Sequence[FunctionTool], spec: OutputSpec) -> str:
    """The system-prompt text that teaches the envelope."""
    lines = [
        "You can call the following functions. Each is given as JSON with its name, "
        "its description and the JSON schema of its arguments:",
    ]
    for tool in tools:
        entry = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.arguments_schema,
        }
        lines.append(json.dumps(entry, ensure_ascii=False))
    lines.append(
        "To call functions, reply with only a JSON object of this form and nothing else: "
        '{"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}'
    )
    lines.append(
        "You may call several functions at once."
        if spec.parallel_tool_calls
        else "Call one function at a time."
    )
    choice = spec.tool_choice
    if choice.mode == "required" and choice.function is not None:
        lines.append(f'You must call the function "{choice.function}" now.')
    elif choice.mode == "required":
        lines.append("You must call a function now.")
    else:
        lines.append("If no function is needed, answer in plain text instead.")
    lines.append(
        "Results of your calls come back as a message "
        '{"tool_results": [{"tool_call_id": ..., "name": ..., "content": ...}]}.'
    )
    return "\n".join(lines)


def rewrite_history(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Tool calls and results as plain messages any chat template renders."""
    out: list[ChatMessage] = []
    results: list[ChatMessage] = []

    def flush() -> None:
        if results:
            items = [
                {"tool_call_id": m.tool_call_id, "name": m.name, "content": m.content}
                for m in results
            ]
            out.append(ChatMessage("user", json.dumps({RESULTS_KEY: items}, ensure_ascii=False)))
            results.clear()

    for message in messages:
        if message.role == "tool":
            results.append(message)
            continue
        flush()
        if message.role == "assistant" and message.tool_calls:
            calls = [{"name": c.name, "arguments": _loads(c.arguments)} for c in message.tool_calls]
            envelope = json.dumps({KEY: calls}, ensure_ascii=False)
            content = f"{message.content}\n{envelope}" if message.content else envelope
            out.append(replace(message, content=content, tool_calls=()))
        else:
            out.append(message)
    flush()
    return out


def _with_system(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    if messages and messages[0].role == "system":
        first = messages[0]
        return [replace(first, content=f"{first.content}\n\n{text}"), *messages[1:]]
    return [ChatMessage("system", text), *messages]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
