"""``Tokenizer`` over ``mistral-common``, for Mistral's own tokenizer files.

Mistral checkpoints ship ``tokenizer.model.v*`` (sentencepiece) or ``tekken.json``
and no chat template: prompts are built by mistral-common's versioned instruct
tokenizers. This module only maps our ``ChatMessage`` onto its request types.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mistral_common.exceptions import MistralCommonException
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.protocol.instruct.messages import (
    AssistantMessage,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as _MistralCommonTokenizer

from levant.models.tokenizers.protocol import ChatMessage

__all__ = ["MistralTokenizer"]

_MistralMessage = SystemMessage | UserMessage | AssistantMessage | ToolMessage


class MistralTokenizer:
    """A mistral-common tokenizer (sentencepiece v1-v7 or tekken); implements ``Tokenizer``."""

    def __init__(self, inner: _MistralCommonTokenizer[Any, Any, Any, Any, Any]) -> None:
        self.inner = inner
        """The wrapped ``mistral_common`` tokenizer."""
        self._raw = inner.instruct_tokenizer.tokenizer

    @classmethod
    def from_file(cls, path: Path) -> MistralTokenizer:
        return cls(_MistralCommonTokenizer.from_file(str(path)))

    @property
    def version(self) -> str:
        """mistral-common's tokenizer version, e.g. ``"v3"``."""
        return str(self._raw.version.value)

    # -- Tokenizer protocol -------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self._raw.n_words)

    @property
    def bos_id(self) -> int | None:
        return int(self._raw.bos_id)

    @property
    def eos_ids(self) -> frozenset[int]:
        # Mistral templates close every assistant turn with EOS itself.
        return frozenset({int(self._raw.eos_id)})

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        # Raw text only: control tokens written in ``text`` stay plain text.
        return [int(i) for i in self._raw.encode(text, bos=add_bos, eos=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.inner.decode(list(ids), special_token_policy=SpecialTokenPolicy.IGNORE))

    def render_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        request = ChatCompletionRequest(messages=[_to_mistral(m) for m in messages])
        try:
            tokens = self.inner.encode_chat_completion(request).tokens
        except MistralCommonException as exc:
            raise ValueError(f"mistral-common rejected the conversation: {exc}") from exc
        return [int(i) for i in tokens]

    # -- extras ---------------------------------------------------------------

    def encode_fim(self, prompt: str, suffix: str) -> list[int]:
        """Fill-in-the-middle prompt: the model writes what goes between ``prompt`` and ``suffix``.

        Raises ``ValueError`` if this tokenizer has no FIM control tokens.
        """
        fim_ids = [
            getattr(self.inner.instruct_tokenizer, name, None) for name in ("PREFIX", "SUFFIX")
        ]
        # Older sentencepiece files lack [PREFIX]/[SUFFIX] and resolve them to <unk>.
        if any(i is None or i == self._raw.unk_id for i in fim_ids):
            raise ValueError(
                f"fill-in-the-middle is not supported by this Mistral tokenizer ({self.version}): "
                "it has no [PREFIX]/[SUFFIX] control tokens"
            )
        try:
            tokens = self.inner.encode_fim(FIMRequest(prompt=prompt, suffix=suffix)).tokens
        except (MistralCommonException, KeyError, AssertionError) as exc:
            raise ValueError(
                f"fill-in-the-middle is not supported by this Mistral tokenizer "
                f"({self.version}): {exc}"
            ) from exc
        return [int(i) for i in tokens]


def _to_mistral(message: ChatMessage) -> _MistralMessage:
    if message.role == "system":
        return SystemMessage(content=message.content)
    if message.role == "user":
        return UserMessage(content=message.content)
    if message.role == "assistant":
        return AssistantMessage(content=message.content, prefix=message.prefix)
    return ToolMessage(
        content=message.content, tool_call_id=message.tool_call_id, name=message.name
    )
