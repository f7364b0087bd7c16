"""Tool calling for chat templates with Hermes-style tool syntax (Qwen2.5/3, Hermes, ...).

Boundary: a ``ToolSyntax`` over an ``HFTokenizer`` whose template renders ``tools``
itself and teaches the model to answer with

    <tool_call>
    {"name": "<function>", "arguments": {...}}
    </tool_call>

(one block per call, separated by a newline). The template renders the tools, the
assistant's calls and the tool results; the grammar enforces the blocks (each call's
arguments valid against its schema). As with the envelope, under ``auto`` the answer
is either text not starting with ``<`` or calls from its first character on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.protocol import ChatMessage, ToolCall
from levant.structured.grammar import json_lark
from levant.structured.json_schema import SchemaBundle
from levant.structured.lead_parser import LeadingCallsParser
from levant.structured.syntax import OutputSpec
from levant.structured.tools import call_schema, calls_from_json

__all__ = ["HermesParser", "HermesToolSyntax", "is_hermes_template"]

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_TEXT_TERMINAL = "TEXT: /[^<\\s](.|\\n)*/"
_BLOCK = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.DOTALL)


def is_hermes_template(tokenizer: HFTokenizer) -> bool:
    """A template that renders tools and writes calls in ``<tool_call>`` blocks."""
    template = tokenizer.chat_template
    return tokenizer.supports_tools and template is not None and OPEN in template.source


class HermesToolSyntax:
    def __init__(self, tokenizer: HFTokenizer) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: Sequence[ChatMessage], spec: OutputSpec) -> list[int]:
        tools = [t.definition() for t in spec.callable_tools]
        return self.tokenizer.render_chat(messages, tools or None)

    def grammar(self, spec: OutputSpec) -> str | None:
        tools = spec.callable_tools
        response = spec.response_schema
        if not tools:
            if response is None:
                return None
            return "start: " + json_lark(response, lenient=not spec.response_strict)
        lenient = not all(t.strict for t in tools)
        calls = []
        for tool in tools:  # one %json per function: each parameters schema keeps its $refs
            bundle = SchemaBundle()
            schema = bundle.root(call_schema([tool], bundle))
            calls.append(f'"{OPEN}\\n" {json_lark(schema, lenient=lenient)} "\\n{CLOSE}"')
        rules = "call: " + " | ".join(calls) + "\n"
        rules += 'calls: call ("\\n" call)*\n' if spec.parallel_tool_calls else "calls: call\n"
        if spec.tool_choice.mode == "required":
            return "start: calls\n" + rules
        if response is not None:  # "<" or "{": the first character tells them apart
            body = json_lark(response, lenient=not spec.response_strict)
            return f"start: calls | {body}\n{rules}"
        return f"start: TEXT | calls\n{_TEXT_TERMINAL}\n{rules}"

    def parser(self, spec: OutputSpec) -> HermesParser | None:
        if not spec.callable_tools:
            return None
        return HermesParser(calls_only=spec.tool_choice.mode == "required")


class HermesParser(LeadingCallsParser):
    opener = OPEN

    def extract(self, text: str) -> list[ToolCall] | None:
        blocks = _BLOCK.findall(text)
        if not blocks or not text.lstrip().startswith(OPEN):
            return None
        return calls_from_json([json.loads(block) for block in blocks])
