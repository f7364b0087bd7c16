"""Text -> the token ids an encoder reads, special tokens included, never truncated.

Boundary: wraps a HF ``tokenizers`` ``tokenizer.json`` (WordPiece for BERT) with
its post-processor, so ``[CLS] ... [SEP]`` are added as the model was trained. The
file's own truncation and padding settings are switched off: a too-long input is
the caller's to refuse, and padding is done per batch by the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tokenizers


class EmbeddingTokenizer:
    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        padding = tokenizer.padding
        self.pad_id = int(padding["pad_id"]) if padding else 0
        """Fills short rows of a batch; masked out, so its value never matters."""
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer

    @classmethod
    def from_file(cls, path: Path) -> EmbeddingTokenizer:
        return cls(tokenizers.Tokenizer.from_file(str(path)))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids per text, with the model's special tokens; lengths are not limited here."""
        return [list(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=True)]
