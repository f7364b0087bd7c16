"""A model's ``Tokenizer`` as llguidance's ``LLTokenizer`` (every token as bytes).

Boundary: the only place that knows both our tokenizer classes and llguidance's view
of a vocabulary. HF/GGUF tokenizers hand over their ``tokenizers`` JSON; Mistral's
Tekken files go through mistral-common's own adapter; Mistral's sentencepiece files
are read piece by piece here. Building one takes a fraction of a second per model,
so callers keep it (``GrammarCompiler`` does).
"""

from __future__ import annotations

import re
from typing import Any

import llguidance as llg
from mistral_common.guidance.tokenizer import from_mistral_tokenizer
from mistral_common.tokens.tokenizers.tekken import is_tekkenizer

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import Tokenizer

__all__ = ["UnsupportedTokenizer", "to_ll_tokenizer"]


class UnsupportedTokenizer(ValueError):
    """Grammar-constrained decoding is not available for this tokenizer."""


def to_ll_tokenizer(tokenizer: Tokenizer) -> llg.LLTokenizer:
    if isinstance(tokenizer, HFTokenizer):
        return llg.LLTokenizer(
            tokenizer.backend.to_str(),
            n_vocab=tokenizer.vocab_size,
            eos_token=sorted(tokenizer.eos_ids),
        )
    if isinstance(tokenizer, MistralTokenizer):
        raw = tokenizer.inner.instruct_tokenizer.tokenizer
        if is_tekkenizer(raw):
            return from_mistral_tokenizer(tokenizer.inner)
        return llg.LLTokenizer(llg.TokenizerWrapper(_SentencePieceVocab(raw)))
    raise UnsupportedTokenizer(
        f"structured outputs are not available for {type(tokenizer).__name__} tokenizers"
    )


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_MARKER = "\n"


class _SentencePieceVocab:
    """mistral-common's sentencepiece tokenizer in the shape ``llg.TokenizerWrapper`` reads:
    control tokens as ``<NAME>`` (llguidance's spelling of special tokens), byte-fallback
    pieces as their byte, ``▁`` as a space."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        model = raw._model  # the sentencepiece processor mistral-common wraps
        self.eos_token_id = int(raw.eos_id)
        self.bos_token_id = int(raw.bos_id)
        self.tokens: list[bytes] = []
        self.special_token_ids: list[int] = []
        for i in range(int(raw.n_words)):
            piece = str(model.id_to_piece(i))
            if model.is_control(i) or model.is_unknown(i):
                name = piece[1:-1] if piece[:1] in "[<" and piece[-1:] in "]>" else piece
                self.special_token_ids.append(i)
                self.tokens.append(f"<{name}>".encode())
            elif model.is_byte(i) and (match := _BYTE_PIECE.fullmatch(piece)):
                self.tokens.append(bytes([int(match.group(1), 16)]))
            else:
                self.tokens.append(piece.replace("\u2581", " ").encode())

    def __call__(self, text: str) -> list[int]:
        # sentencepiece prepends "▁" to every text it encodes; llguidance must see the
        # tokens of the text alone, or it misreads every piece as starting with a space.
        model = self._raw._model
        ids = [int(i) for i in model.encode(_MARKER + text)]
        marker = [int(i) for i in model.encode(_MARKER)]
        return ids[len(marker) :] if ids[: len(marker)] == marker else ids
