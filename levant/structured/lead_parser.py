"""Splitting an answer that is either content or, from its first character, tool calls.

Boundary: text only. Used by the syntaxes whose calls are plain text at the start of
the answer (the JSON envelope's ``{``, Hermes' ``<tool_call>``): content streams as it
comes; once the first non-blank character opens calls, the rest is held and parsed at
the end, and given back as content if it turns out not to be calls after all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from levant.models.tokenizers.protocol import ToolCall
from levant.structured.syntax import ParsedOutput

__all__ = ["LeadingCallsParser"]


class LeadingCallsParser(ABC):
    """Implements ``OutputParser``; subclasses say what opens calls and how to read them."""

    opener = "{"

    def __init__(self, *, calls_only: bool) -> None:
        """``calls_only``: the grammar makes the whole answer held text (calls, or JSON
        that may still be calls), so nothing is streamed before the end."""
        self._mode = "held" if calls_only else "undecided"
        self._held: list[str] = []

    @abstractmethod
    def extract(self, text: str) -> list[ToolCall] | None:
        """The calls in ``text``, or None when it is not calls (then it is content)."""

    def push(self, token_ids: Sequence[int], text: str) -> str:
        if self._mode == "text":
            return text
        self._held.append(text)
        if self._mode == "held":
            return ""
        held = "".join(self._held)
        first = held.lstrip()[:1]
        if not first:
            return ""
        if first == self.opener[:1]:
            self._mode = "held"
            return ""
        self._mode = "text"
        self._held = []
        return held

    def finish(self) -> ParsedOutput:
        held = "".join(self._held)
        self._held = []
        if self._mode != "held":
            return ParsedOutput(held, [])
        try:
            calls = self.extract(held)
        except ValueError:  # cut short (max_tokens): the text is all there is
            calls = None
        return ParsedOutput("", calls) if calls else ParsedOutput(held, [])
