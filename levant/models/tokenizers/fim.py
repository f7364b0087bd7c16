"""Fill-in-the-middle prompts: the text before and after a gap -> prompt ids for the middle.

Two conventions are known. Mistral's (Codestral) is mistral-common's own encoding,
``[BOS] [SUFFIX] suffix [PREFIX] prompt`` (``MistralTokenizer.encode_fim``).
StarCoder-style vocabularies carry three control tokens and are prompted in PSM
order (Bavarian et al., 2022): ``<fim_prefix> prompt <fim_suffix> suffix <fim_middle>``;
Qwen2.5-Coder spells them ``<|fim_prefix|>`` and so on. Any other tokenizer has no FIM
and is refused with ``FIMUnsupported``.
"""

from __future__ import annotations

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import Tokenizer

__all__ = ["FIMUnsupported", "encode_fim", "supports_fim"]

# (prefix, suffix, middle) spellings, tried in order.
_PSM_SPELLINGS = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
)


class FIMUnsupported(ValueError):
    """This tokenizer has no fill-in-the-middle control tokens."""


def _psm_ids(tokenizer: HFTokenizer) -> tuple[int, int, int] | None:
    for spelling in _PSM_SPELLINGS:
        prefix, suffix, middle = (tokenizer.token_to_id(t) for t in spelling)
        if prefix is not None and suffix is not None and middle is not None:
            return prefix, suffix, middle
    return None


def supports_fim(tokenizer: Tokenizer) -> bool:
    try:
        encode_fim(tokenizer, "", "")
    except FIMUnsupported:
        return False
    return True


def encode_fim(tokenizer: Tokenizer, prompt: str, suffix: str) -> list[int]:
    """Prompt ids asking the model to write what goes between ``prompt`` and ``suffix``.

    ``prompt`` and ``suffix`` are text: control tokens spelled inside them stay text.
    """
    if isinstance(tokenizer, MistralTokenizer):
        try:
            return tokenizer.encode_fim(prompt, suffix)
        except ValueError as exc:
            raise FIMUnsupported(str(exc)) from exc
    if isinstance(tokenizer, HFTokenizer) and (ids := _psm_ids(tokenizer)) is not None:
        fim_prefix, fim_suffix, fim_middle = ids
        bos = [tokenizer.bos_id] if tokenizer.add_bos_token and tokenizer.bos_id is not None else []
        # Code may spell control tokens (``<|endoftext|>``, ``<fim_middle>``): as data,
        # never as the controls themselves.
        text = tokenizer._encode_as_plain_text
        return [*bos, fim_prefix, *text(prompt), fim_suffix, *text(suffix), fim_middle]
    raise FIMUnsupported(
        "this tokenizer has no fill-in-the-middle control tokens "
        "(mistral-common [PREFIX]/[SUFFIX], or <fim_prefix>/<fim_suffix>/<fim_middle>)"
    )
