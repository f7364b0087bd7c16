"""Building an ``HFTokenizer`` from the tokenizer a GGUF file carries in its metadata.

A GGUF has no ``tokenizer.json``: it stores the vocabulary, merges, token types
and special ids under llama.cpp's ``tokenizer.ggml.*`` keys. We rebuild the
byte-level BPE ``tokenizers`` model from those, as transformers' GGUF
conversion does, and split text the way llama.cpp does for the file's ``pre``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tokenizers
from gguf import GGUFReader
from tokenizers import AddedToken, Regex, decoders, pre_tokenizers
from tokenizers.models import BPE

from levant.models.tokenizers.hf import HFTokenizer

__all__ = ["GGUFTokenizerMetadata", "load_gguf_tokenizer", "read_gguf_tokenizer_metadata"]

# llama.cpp's token types (llama_token_type).
_CONTROL = 3
_USER_DEFINED = 4

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ``tokenizer.ggml.pre`` -> the regexes llama.cpp (llama-vocab.cpp) splits text
# with, applied one after another; each keeps the text between its matches.
_PRE_SPLITS: dict[str, tuple[str, ...]] = {
    # llama.cpp's fallback for a BPE vocabulary that names no known pre-tokenizer.
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt2": (_GPT2_SPLIT,),
    "mpt": (_GPT2_SPLIT,),
    "olmo": (_GPT2_SPLIT,),
    # SmolLM's tokenizer.json: Digits(individual_digits) then GPT-2 ByteLevel.
    "smollm": (r"\p{N}", _GPT2_SPLIT),
    "starcoder": (r"\p{N}", _GPT2_SPLIT),
    "refact": (r"\p{N}", _GPT2_SPLIT),
    "codeshell": (r"\p{N}", _GPT2_SPLIT),
    "llama-bpe": (_LLAMA3_SPLIT,),
    "llama3": (_LLAMA3_SPLIT,),
    "llama-v3": (_LLAMA3_SPLIT,),
    "smaug-bpe": (_LLAMA3_SPLIT,),
    "dbrx": (_LLAMA3_SPLIT,),
    "qwen2": (_QWEN2_SPLIT,),
    "deepseek-r1-qwen": (_QWEN2_SPLIT,),
}


@dataclass(frozen=True)
class GGUFTokenizerMetadata:
    """The ``tokenizer.*`` keys of a GGUF file that describe its tokenizer."""

    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_ids: tuple[int, ...]
    add_bos_token: bool
    chat_template: str | None


def read_gguf_tokenizer_metadata(path: Path) -> GGUFTokenizerMetadata:
    reader = GGUFReader(path)

    def get(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    def optional_int(key: str) -> int | None:
        value = get(key)
        return None if value is None else int(value)

    model = get("tokenizer.ggml.model")
    if model is None:
        raise ValueError(f"{path}: GGUF file has no tokenizer (no tokenizer.ggml.model key)")
    eot_ids = (
        optional_int("tokenizer.ggml.eot_token_id"),
        optional_int("tokenizer.ggml.eom_token_id"),
    )
    return GGUFTokenizerMetadata(
        model=str(model),
        pre=get("tokenizer.ggml.pre"),
        tokens=list(get("tokenizer.ggml.tokens") or []),
        token_types=[int(t) for t in get("tokenizer.ggml.token_type") or []],
        merges=list(get("tokenizer.ggml.merges") or []),
        bos_id=optional_int("tokenizer.ggml.bos_token_id"),
        eos_id=optional_int("tokenizer.ggml.eos_token_id"),
        unk_id=optional_int("tokenizer.ggml.unknown_token_id"),
        pad_id=optional_int("tokenizer.ggml.padding_token_id"),
        eot_ids=tuple(i for i in eot_ids if i is not None),
        add_bos_token=bool(get("tokenizer.ggml.add_bos_token") or False),
        chat_template=get("tokenizer.chat_template"),
    )


def load_gguf_tokenizer(path: Path) -> HFTokenizer:
    """The tokenizer embedded in the GGUF file at ``path``."""
    meta = read_gguf_tokenizer_metadata(path)
    if meta.model != "gpt2":
        raise ValueError(
            f"{path}: GGUF tokenizer model {meta.model!r} is not supported "
            "(only 'gpt2', byte-level BPE; 'llama' is sentencepiece)"
        )
    return byte_level_tokenizer(meta)


@cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map (``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
    splits = _PRE_SPLITS.get(pre or "default")
    if splits is None:
        raise ValueError(
            f"GGUF pre-tokenizer {pre!r} is not supported (known: {', '.join(sorted(_PRE_SPLITS))})"
        )
    steps: list[pre_tokenizers.PreTokenizer] = [
        pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in splits
    ]
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return pre_tokenizers.Sequence(steps)


def byte_level_tokenizer(meta: GGUFTokenizerMetadata) -> HFTokenizer:
    """Byte-level BPE (``tokenizer.ggml.model == "gpt2"``) from GGUF metadata."""
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    # Tokens are stored in the byte alphabet; any that are not (some converters
    # write added tokens as raw text) are respelled so BPE can find them.
    vocab = {
        token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode()): index
        for index, token in enumerate(meta.tokens)
    }
    merges = [_merge_pair(m) for m in meta.merges]
    tok = tokenizers.Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    tok.pre_tokenizer = _pre_tokenizer(meta.pre)
    tok.decoder = decoders.ByteLevel()
    _add_marked_tokens(tok, meta, alphabet)

    def name(index: int | None) -> str | None:
        return meta.tokens[index] if index is not None and 0 <= index < len(meta.tokens) else None

    return HFTokenizer(
        tok,
        chat_template=meta.chat_template,
        bos_token=name(meta.bos_id),
        eos_token=name(meta.eos_id),
        unk_token=name(meta.unk_id),
        pad_token=name(meta.pad_id),
        add_bos_token=meta.add_bos_token,
        extra_eos_ids=meta.eot_ids,
    )


def _merge_pair(merge: str) -> tuple[str, str]:
    left, _, right = merge.partition(" ")
    return left, right


def _add_marked_tokens(
    tok: tokenizers.Tokenizer, meta: GGUFTokenizerMetadata, alphabet: set[str]
) -> None:
    """Control tokens become special tokens, user-defined ones plain added tokens.

    Both must match whole in text rather than be cut up by BPE. A "control"
    token spelled outside the byte alphabet is a llama.cpp mislabel; adding it
    would grow the vocabulary past the model's, so it is skipped (as transformers does).
    """
    types: Sequence[int] = meta.token_types
    control = [
        AddedToken(token, normalized=False, special=True)
        for token, kind in zip(meta.tokens, types, strict=False)
        if kind == _CONTROL and set(token) <= alphabet
    ]
    if control:
        tok.add_special_tokens(control)
    vocab = tok.get_vocab()
    user_defined = [
        AddedToken(token, normalized=False, special=False)
        for token, kind in zip(meta.tokens, types, strict=False)
        if kind == _USER_DEFINED and token in vocab
    ]
    if user_defined:
        tok.add_tokens(user_defined)
