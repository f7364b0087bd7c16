"""Planning one request's output: which prompt, which grammar, which parser.

Boundary: the serving layer's entry into ``levant.structured``. ``StructuredOutputs``
belongs to one model (its tokenizer): it picks the model's tool syntax (Mistral's
control tokens, Hermes ``<tool_call>`` blocks, else the JSON envelope) and compiles
grammars through a cached ``GrammarCompiler``. ``plan`` checks the spec (a
``GrammarError`` is the caller's 400) and returns an ``OutputPlan`` that makes a fresh
constraint and parser per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import ChatMessage, Tokenizer
from levant.structured.envelope import EnvelopeSyntax
from levant.structured.grammar import (
    CompiledGrammar,
    GrammarCompiler,
    GrammarConstraint,
    GrammarError,
)
from levant.structured.hermes_syntax import HermesToolSyntax, is_hermes_template
from levant.structured.mistral_syntax import MistralToolSyntax
from levant.structured.syntax import OutputParser, OutputSpec, ToolSyntax

__all__ = ["GrammarError", "OutputPlan", "OutputSpec", "StructuredOutputs", "tool_syntax_for"]


def tool_syntax_for(tokenizer: Tokenizer) -> ToolSyntax:
    """The model's own tool syntax where we know it: Mistral's control tokens
    (mistral-common), a chat template's Hermes ``<tool_call>`` blocks; else the JSON
    envelope (templates without tool syntax, or with one we do not parse yet)."""
    if isinstance(tokenizer, MistralTokenizer) and tokenizer.supports_tools:
        return MistralToolSyntax(tokenizer)
    if isinstance(tokenizer, HFTokenizer) and is_hermes_template(tokenizer):
        return HermesToolSyntax(tokenizer)
    return EnvelopeSyntax(tokenizer)


@dataclass(frozen=True)
class OutputPlan:
    spec: OutputSpec
    syntax: ToolSyntax
    grammar: CompiledGrammar | None

    def render(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.syntax.render(messages, self.spec)

    def constraint(self) -> GrammarConstraint | None:
        """A fresh grammar state for one run (None: unconstrained)."""
        return None if self.grammar is None else self.grammar.constraint()

    def parser(self) -> OutputParser | None:
        """A fresh parser for one run (None: the output is plain content)."""
        return self.syntax.parser(self.spec)


class StructuredOutputs:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.compiler = GrammarCompiler(tokenizer)
        self.syntax = tool_syntax_for(tokenizer)

    def plan(self, spec: OutputSpec) -> OutputPlan:
        """Check and compile ``spec``; raises GrammarError. May take a while on a new schema
        (and on first use, to index the vocabulary): call it off the event loop."""
        _check(spec)
        try:
            grammar = self._compile(spec)
        except GrammarError as exc:
            if exc.param is not None:
                raise
            param = "tools" if spec.callable_tools else "response_format"
            raise GrammarError(str(exc), param) from exc
        return OutputPlan(spec, self.syntax, grammar)

    def _compile(self, spec: OutputSpec) -> CompiledGrammar | None:
        if spec.tools:
            text = self.syntax.grammar(spec)
            return None if text is None else self.compiler.compile(text)
        if spec.response_schema is not None:
            return self.compiler.json_schema(spec.response_schema, strict=spec.response_strict)
        return None


def _check(spec: OutputSpec) -> None:
    names = [t.name for t in spec.tools]
    if len(set(names)) != len(names):
        raise GrammarError("tool names must be unique", "tools")
    choice = spec.tool_choice
    if choice.mode == "required" and not spec.tools:
        raise GrammarError(
            "tool_choice requires a function call but no tools were given", "tool_choice"
        )
    if choice.function is not None and choice.function not in names:
        raise GrammarError(
            f"tool_choice names function '{choice.function}', which is not among the tools",
            "tool_choice",
        )
