"""Incremental detokenization equals decoding everything at once, for real tokenizers."""

from __future__ import annotations

from pathlib import Path

import mistral_common
import pytest

from levant.models.tokenizers.loader import load_tokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import Tokenizer
from levant.serving.detokenizer import IncrementalDetokenizer

MC_DATA = Path(mistral_common.__file__).parent / "data"
TEXTS = [
    "Bonjour, ça va ? Très bien, merci.",
    "Emoji 🇫🇷🧀 and CJK 東京 mixed with  double  spaces\nand newlines.",
    "def f(x):\n    return x ** 2  # squares\n",
    "Ünïcödé — “quotes” – dashes… 1234567890",
]


@pytest.fixture(scope="module")
def tokenizers(model_home: Path) -> list[Tokenizer]:
    return [
        load_tokenizer(model_home / "models" / "smollm2-135m-instruct" / "model.gguf"),
        MistralTokenizer.from_file(MC_DATA / "tekken_240911.json"),
        MistralTokenizer.from_file(MC_DATA / "mistral_instruct_tokenizer_240323.model.v3"),
    ]


@pytest.mark.parametrize("text", TEXTS)
def test_one_token_at_a_time_equals_full_decode(tokenizers: list[Tokenizer], text: str) -> None:
    for tok in tokenizers:
        ids = tok.encode(text)
        detok = IncrementalDetokenizer(tok)
        pieces = [detok.push([i]) for i in ids]
        pieces.append(detok.flush())
        assert "".join(pieces) == tok.decode(ids), type(tok).__name__
        assert all("\ufffd" not in p for p in pieces)  # never half a character


def test_context_gives_the_leading_space(tokenizers: list[Tokenizer]) -> None:
    tok = tokenizers[2]  # sentencepiece: a word-initial piece carries "▁"
    prompt = tok.encode("Hello")
    gen = tok.encode("Hello world")[len(prompt) :]
    detok = IncrementalDetokenizer(tok, context=prompt)
    assert "".join(detok.push([i]) for i in gen) + detok.flush() == " world"
