"""The GGUF tokenizer against transformers' reading of the same SmolLM2 file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import pytest

from levant.models.tokenizers.gguf import load_gguf_tokenizer, read_gguf_tokenizer_metadata
from levant.models.tokenizers.hf import HFTokenizer

TEXTS = [
    "Hello world",
    "Hello, World! How are you today?",
    "The year 2024 had 366 days; π ≈ 3.14159.",
    "1,000,000 and 42 and 007",
    "naïve café résumé über Ærøskøbing",
    "日本語のテキストと中文文本",
    "한국어 텍스트",
    "Ελληνικά и русский текст",
    "emoji 🤖🎉👩‍👩‍👧 done",
    "def f(x):\n    return x ** 2\n",
    'for (int i = 0; i < n; ++i) { printf("%d\\n", i); }',
    "tabs\t\tand\n\n\nnewlines\r\n",
    "   leading spaces",
    "trailing spaces   ",
    "multiple     spaces     inside",
    "don't I'll we've they're",
    "<|im_start|>user\nhi<|im_end|>",
    "a<|endoftext|>b",
    "URL: https://example.com/path?q=1&r=2#frag",
    "",
    " ",
    "\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_transformers(
    smollm2_tokenizer: HFTokenizer, smollm2_reference: Any, text: str
) -> None:
    assert smollm2_tokenizer.encode(text) == smollm2_reference.encode(
        text, add_special_tokens=False
    )


@pytest.mark.parametrize("text", [t for t in TEXTS if "<|" not in t])
def test_decode_round_trips(smollm2_tokenizer: HFTokenizer, text: str) -> None:
    assert smollm2_tokenizer.decode(smollm2_tokenizer.encode(text)) == text


def test_decode_skips_special_tokens(smollm2_tokenizer: HFTokenizer) -> None:
    ids = smollm2_tokenizer.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == smollm2_tokenizer.token_to_id("<|im_start|>")
    assert smollm2_tokenizer.decode(ids) == "user\nhi"


def test_digits_are_split_like_llama_cpp(
    smollm2_tokenizer: HFTokenizer, smollm2_reference: Any
) -> None:
    """``pre = "smollm"`` isolates every digit first (llama.cpp; SmolLM's tokenizer.json
    uses Digits(individual_digits=True)), so a whitespace run before a number stays
    one token. transformers' GGUF loader ignores "smollm" and differs only here."""
    ids = smollm2_tokenizer.encode("x  12")
    pieces = smollm2_reference.convert_ids_to_tokens(ids)
    assert pieces == ["x", "ĠĠ", "1", "2"]
    assert smollm2_reference.convert_ids_to_tokens(
        smollm2_reference.encode("x  12", add_special_tokens=False)
    ) == ["x", "Ġ", "Ġ", "1", "2"]


def test_special_ids(smollm2_tokenizer: HFTokenizer, smollm2_reference: Any) -> None:
    assert smollm2_tokenizer.vocab_size == len(smollm2_reference) == 49152
    assert smollm2_tokenizer.bos_id == smollm2_reference.bos_token_id == 1
    assert smollm2_tokenizer.eos_ids == {smollm2_reference.convert_tokens_to_ids("<|im_end|>")}
    assert smollm2_tokenizer.encode("hi", add_bos=True)[0] == 1
    assert smollm2_tokenizer.add_bos_token is False


def test_metadata(smollm2_gguf_path: Path) -> None:
    meta = read_gguf_tokenizer_metadata(smollm2_gguf_path)
    assert (meta.model, meta.pre) == ("gpt2", "smollm")
    assert len(meta.tokens) == len(meta.token_types) == 49152
    assert meta.chat_template is not None and "<|im_start|>" in meta.chat_template


def _write_gguf(path: Path, model: str, pre: str | None = None) -> Path:
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b", "ab"])
    writer.add_token_types([3, 3, 3, 1, 1, 1])
    writer.add_token_merges(["a b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_sentencepiece_gguf_is_refused_clearly(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "spm.gguf", "llama")
    with pytest.raises(ValueError, match="'llama'"):
        load_gguf_tokenizer(path)


def test_unknown_pre_tokenizer_is_refused_clearly(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "odd.gguf", "gpt2", pre="no-such-pre")
    with pytest.raises(ValueError, match="no-such-pre"):
        load_gguf_tokenizer(path)


@pytest.mark.parametrize("pre", [None, "default", "gpt2", "llama-bpe", "qwen2"])
def test_other_pre_tokenizers_build(tmp_path: Path, pre: str | None) -> None:
    tok = load_gguf_tokenizer(_write_gguf(tmp_path / "bpe.gguf", "gpt2", pre=pre))
    assert tok.encode("ab") == [5]
    assert tok.encode("<s>ab</s>") == [1, 5, 2]
    assert tok.decode([1, 5, 2]) == "ab"
