"""Grammars compiled for one model's tokenizer with llguidance, and the engine constraint.

Boundary: JSON schemas and Lark grammars in, ``GrammarConstraint`` (the engine's
``LogitsConstraint``) out. A grammar is validated and compiled once, kept in an LRU
keyed by its text (the compiler belongs to one tokenizer, so the key is effectively
schema + tokenizer); each request gets a cheap copy of the compiled matcher.

JSON is generated compact and canonical (``{"a": 1, "b": [2, 3]}``: no free whitespace),
which keeps small models from wandering into endless runs of blanks.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import llguidance as llg
import torch

from levant.engine.constraints import bitmask_words
from levant.models.tokenizers.protocol import Tokenizer
from levant.structured.llg_tokenizer import UnsupportedTokenizer, to_ll_tokenizer

__all__ = [
    "JSON_OPTIONS",
    "CompiledGrammar",
    "GrammarCompiler",
    "GrammarConstraint",
    "GrammarError",
    "json_lark",
]

JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
"""llguidance's JSON compile options (its ``x-guidance`` schema key)."""

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


class GrammarError(ValueError):
    """The request's schema, tools or tool choice cannot be enforced (the caller's error:
    a 400); ``param`` names the request field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def json_lark(schema: Mapping[str, Any], *, lenient: bool = False) -> str:
    """A Lark expression for JSON valid against ``schema``, in our canonical layout.

    ``lenient``: keywords llguidance cannot enforce are ignored instead of refused.
    """
    if not isinstance(schema, Mapping):
        raise GrammarError("a JSON schema must be an object")
    options = {**JSON_OPTIONS, "lenient": lenient}
    return "%json " + json.dumps({**schema, "x-guidance": options}, ensure_ascii=False)


class GrammarConstraint:
    """One request's grammar state; implements ``levant.engine.constraints.LogitsConstraint``.

    The engine thread drives it while the request runs; the serving layer reads
    ``error`` once the request has finished.
    """

    def __init__(self, matcher: llg.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self.vocab_size = vocab_size
        """The tokenizer's vocabulary (the model's may be larger: those tokens stay masked)."""
        self._words = bitmask_words(vocab_size)
        self._error: str | None = None

    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        n = self._words
        if bitmask.numel() >= n:
            target = bitmask[:n]
            self._matcher.unsafe_compute_mask_ptr(target.data_ptr(), n * 4)
            return
        full = torch.zeros(n, dtype=torch.int32)  # the model's vocabulary is smaller
        self._matcher.unsafe_compute_mask_ptr(full.data_ptr(), n * 4)
        bitmask.copy_(full[: bitmask.numel()])

    def advance(self, token_id: int) -> None:
        if not self._matcher.consume_token(token_id) and self._error is None:
            self._error = self._matcher.get_error() or f"token {token_id} was rejected"

    def is_done(self) -> bool:
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str | None:
        """Why the grammar stopped matching, if it did (a bug, never the client's)."""
        if self._error is None and self._matcher.is_error():
            self._error = self._matcher.get_error()
        return self._error


class CompiledGrammar:
    """A validated grammar and a pristine matcher to copy per request."""

    def __init__(self, text: str, matcher: llg.LLMatcher, vocab_size: int) -> None:
        self.text = text
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._lock = threading.Lock()

    def constraint(self) -> GrammarConstraint:
        with self._lock:  # deep_copy reads the pristine matcher; keep copies serial
            matcher = self._matcher.deep_copy()
        return GrammarConstraint(matcher, self._vocab_size)


class GrammarCompiler:
    """Compiles Lark grammars (llguidance's dialect, with ``%json``) for one tokenizer."""

    def __init__(self, tokenizer: Tokenizer, *, cache_size: int = 64) -> None:
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._ll: llg.LLTokenizer | None = None
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def ll_tokenizer(self) -> llg.LLTokenizer:
        """Built on first use (about 0.2 s for a 50k vocabulary), then kept."""
        with self._lock:
            if self._ll is None:
                try:
                    self._ll = to_ll_tokenizer(self.tokenizer)
                except UnsupportedTokenizer as exc:
                    raise GrammarError(str(exc)) from exc
            return self._ll

    def compile(self, lark: str) -> CompiledGrammar:
        """Validate and compile ``lark`` (or return the cached result); GrammarError if invalid.

        Can take up to a second for a large schema: call it off the event loop.
        """
        with self._lock:
            hit = self._cache.get(lark)
            if hit is not None:
                self._cache.move_to_end(lark)
                return hit
        ll = self.ll_tokenizer
        grammar = llg.LLMatcher.grammar_from_lark(lark)
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, ll)
        if is_error:
            raise GrammarError(_first_line(messages[0]) if messages else "invalid grammar")
        matcher = llg.LLMatcher(ll, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(_first_line(matcher.get_error()))
        compiled = CompiledGrammar(lark, matcher, ll.vocab_size)
        with self._lock:
            self._cache[lark] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def json_schema(
        self, schema: Mapping[str, Any] | None, *, strict: bool = True
    ) -> CompiledGrammar:
        """JSON valid against ``schema``; None: any JSON object (``json_object`` mode)."""
        body = ANY_JSON_OBJECT if schema is None else schema
        return self.compile("start: " + json_lark(body, lenient=not strict))


def _first_line(message: str) -> str:
    """llguidance's message without its position prefix and source excerpt."""
    line = message.strip().split("\n", 1)[0]
    line = re.sub(r"^at \d+\(\d+\): ", "", line)
    return line.removeprefix("failed to compile JSON schema: ").strip() or "invalid grammar"
