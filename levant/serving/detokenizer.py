"""Incremental detokenization: token ids arrive one by one, text leaves in clean pieces.

Byte-level BPE and sentencepiece byte-fallback can split one character over
several tokens, and some tokenizers change earlier text when a token follows
(leading-space handling). Decoding a short window that starts a few tokens
back, and holding text that ends in an incomplete character, handles both.
"""

from __future__ import annotations

from levant.models.tokenizers.protocol import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, *, context: list[int] | None = None) -> None:
        self._tok = tokenizer
        # Seed with a few ids of context (e.g. the prompt's tail) so the first
        # generated token decodes with its leading space as it would mid-text.
        self._ids: list[int] = list(context or [])[-4:]
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_ids: list[int]) -> str:
        """Add tokens; return the text that became final."""
        self._ids.extend(token_ids)
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        full_text = self._tok.decode(self._ids[self._prefix :])
        if full_text.endswith(_REPLACEMENT) or len(full_text) <= len(prefix_text):
            return ""  # an incomplete character, or nothing visible yet
        self._prefix = self._read
        self._read = len(self._ids)
        return full_text[len(prefix_text) :]

    def flush(self) -> str:
        """Text still held at the end of generation (an incomplete character decodes as-is)."""
        prefix_text = self._tok.decode(self._ids[self._prefix : self._read])
        full_text = self._tok.decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return full_text[len(prefix_text) :] if len(full_text) > len(prefix_text) else ""
