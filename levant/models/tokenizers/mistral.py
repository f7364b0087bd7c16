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
from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool
from mistral_common.protocol.instruct.tool_calls import ToolCall as _MistralToolCall
from mistral_common.tokens.tokenizers.base import SpecialTokenPolicy
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as _MistralCommonTokenizer

from levant.models.tokenizers.protocol import ChatMessage, ToolDefinition

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

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] | None = None
    ) -> list[int]:
        try:
            request = ChatCompletionRequest(
                messages=[_to_mistral(m) for m in messages],
                tools=[_to_tool(t) for t in tools] if tools else None,
            )
            tokens = self.inner.encode_chat_completion(request).tokens
        except (MistralCommonException, ValueError, AssertionError) as exc:
            raise ValueError(f"mistral-common rejected the conversation: {exc}") from exc
        return [int(i) for i in tokens]

    @property
    def supports_tools(self) -> bool:
        """v1 has no tool tokens; every later version encodes tools, calls and results."""
        return self.tool_calls_id is not None

    @property
    def tool_calls_id(self) -> int | None:
        """The ``[TOOL_CALLS]`` control token that opens the model's tool calls."""
        return self.control_id("[TOOL_CALLS]")

    def control_id(self, piece: str) -> int | None:
        """The id of a control token such as ``[ARGS]``, if this tokenizer has it."""
        try:
            found = int(self._raw.get_special_token(piece))
        except (KeyError, ValueError, AssertionError, MistralCommonException):
            return None
        return None if found == self._raw.unk_id else found

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


def _to_tool(tool: ToolDefinition) -> Tool:
    function = tool["function"]
    return Tool(
        function=Function(
            name=function["name"],
            description=function.get("description") or "",
            parameters=function.get("parameters") or {},
        )
    )


def _to_mistral(message: ChatMessage) -> _MistralMessage:
    if message.role == "system":
        return SystemMessage(content=message.content)
    if message.role == "user":
        return UserMessage(content=message.content)
    if message.role == "assistant":
        calls = [
            _MistralToolCall(
                id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments)
            )
            for call in message.tool_calls
        ]
        return AssistantMessage(
            content=message.content or None, tool_calls=calls or None, prefix=message.prefix
        )
    return ToolMessage(
        content=message.content, tool_call_id=message.tool_call_id, name=message.name
    )
