"""Fill-in-the-middle prompts: Mistral's through mistral-common, StarCoder-style in PSM order."""

from __future__ import annotations

from pathlib import Path

import mistral_common
import pytest
import tokenizers
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as MistralCommonTokenizer
from tokenizers import models, pre_tokenizers

from levant.models.tokenizers.fim import FIMUnsupported, encode_fim, supports_fim
from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer

MISTRAL_DATA = Path(mistral_common.__file__).parent / "data"
PROMPT = "def fib(n):\n    "
SUFFIX = "\n\nprint(fib(10))  # [PREFIX] <fim_middle> stay text"


@pytest.mark.parametrize(
    "name", ["mistral_instruct_tokenizer_240323.model.v3", "tekken_240911.json"]
)
def test_mistral_fim_equals_mistral_common(name: str) -> None:
    ours = encode_fim(MistralTokenizer.from_file(MISTRAL_DATA / name), PROMPT, SUFFIX)
    reference = MistralCommonTokenizer.from_file(str(MISTRAL_DATA / name))
    expected = reference.encode_fim(FIMRequest(prompt=PROMPT, suffix=SUFFIX)).tokens
    assert ours == expected
    raw = reference.instruct_tokenizer.tokenizer
    # [BOS] [SUFFIX] suffix [PREFIX] prompt: the model writes the middle next.
    assert ours[0] == raw.bos_id
    assert ours.count(reference.instruct_tokenizer.PREFIX) == 1  # type: ignore[attr-defined]


def test_mistral_tokenizer_without_fim_tokens_is_unsupported() -> None:
    tokenizer = MistralTokenizer.from_file(MISTRAL_DATA / "tokenizer.model.v1")
    assert not supports_fim(tokenizer)
    with pytest.raises(FIMUnsupported, match=r"\[PREFIX\]/\[SUFFIX\]"):
        encode_fim(tokenizer, PROMPT, SUFFIX)


def starcoder_style(*, spelled: tuple[str, str, str]) -> HFTokenizer:
    words = ["<unk>", "def", "fib", "n", "print", "10", "(", ")", ":", "#", "stay", "text"]
    tok = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>", *spelled])
    return HFTokenizer(tok, chat_template=None, eos_token="<|endoftext|>")


@pytest.mark.parametrize(
    "spelled",
    [
        ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
        ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ],
)
def test_starcoder_style_vocabulary_in_psm_order(spelled: tuple[str, str, str]) -> None:
    tokenizer = starcoder_style(spelled=spelled)
    prefix, suffix, middle = (tokenizer.token_to_id(t) for t in spelled)
    ids = encode_fim(tokenizer, PROMPT, SUFFIX)
    expected = [
        prefix,
        *tokenizer.encode(PROMPT),
        suffix,
        *tokenizer._encode_as_plain_text(SUFFIX),
        middle,
    ]
    assert ids == expected
    # "<fim_middle>" written in the code is text, not a second control token.
    assert ids.count(middle) == 1 and ids[-1] == middle


def test_vocabulary_without_fim_tokens_is_unsupported() -> None:
    tok = tokenizers.Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, "<unk>"))
    tokenizer = HFTokenizer(tok, chat_template=None)
    assert not supports_fim(tokenizer)
    with pytest.raises(FIMUnsupported, match="<fim_prefix>"):
        encode_fim(tokenizer, "a", "a")
