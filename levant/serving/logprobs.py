"""Token log-probabilities with their text: the engine's ``TokenLogprob`` (ids and numbers)
made readable for the API.

Each token is given its own bytes (byte-level BPE pieces may hold part of a character)
and a text: the bytes as UTF-8, with an incomplete character written as ``\\xNN``
escapes; special tokens are spelled by name (``<|im_end|>``). Bytes come from
llguidance's view of the vocabulary when the tokenizer has one, else from decoding the
token alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from levant.engine.protocol import TokenLogprob
from levant.models.tokenizers.protocol import Tokenizer


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprobText:
    """A sampled token and the most likely tokens at its position (most likely first)."""

    token_id: int
    token: str
    bytes: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()


class TokenTexts:
    """Bytes and text of single token ids for one tokenizer (built on first use)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._bytes_of: Callable[[int], bytes] | None = None
        self._lock = threading.Lock()

    def _resolve(self) -> Callable[[int], bytes]:
        with self._lock:
            if self._bytes_of is None:
                self._bytes_of = self._build()
            return self._bytes_of

    def _build(self) -> Callable[[int], bytes]:
        try:
            from levant.structured.llg_tokenizer import to_ll_tokenizer

            ll = to_ll_tokenizer(self._tokenizer)
        except Exception:  # no byte view of this vocabulary: decode tokens one by one
            return lambda t: self._tokenizer.decode([t]).encode()
        return lambda t: bytes(ll.decode_bytes([t]))

    def warm(self) -> None:
        """Build the byte view now (a fraction of a second for a 50k vocabulary)."""
        self._resolve()

    def bytes_of(self, token_id: int) -> bytes:
        return self._resolve()(token_id)

    def text(self, data: bytes) -> str:
        return data.decode("utf-8", errors="backslashreplace")

    def describe(self, logprobs: Sequence[TokenLogprob]) -> list[TokenLogprobText]:
        out = []
        for lp in logprobs:
            data = self.bytes_of(lp.token_id)
            top = []
            for token_id, value in lp.top:
                b = self.bytes_of(token_id)
                top.append(TopLogprob(token_id, self.text(b), b, value))
            out.append(TokenLogprobText(lp.token_id, self.text(data), data, lp.logprob, tuple(top)))
        return out
