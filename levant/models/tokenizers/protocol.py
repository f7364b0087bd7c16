"""The contract every tokenizer implements, and the chat message it renders.

Callers (the serving layer, the CLI) only ever see ``Tokenizer``; which library
does the work (HF ``tokenizers``, ``mistral-common``) is the loader's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant message made (or a model just produced)."""

    id: str
    name: str
    arguments: str
    """The arguments as JSON text (an object)."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    prefix: bool = False
    """Mistral's assistant prefix: the last assistant message is continued, not closed."""
    name: str | None = None
    """For a tool message: the function whose result it carries."""
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    """For an assistant message: the calls it made."""


ToolDefinition = Mapping[str, Any]
"""A tool as chat templates and mistral-common take it:
``{"type": "function", "function": {"name", "description", "parameters"}}``."""


class Tokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_ids(self) -> frozenset[int]:
        """Token ids that end generation (EOS and the template's end-of-turn)."""
        ...

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are skipped."""
        ...

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] | None = None
    ) -> list[int]:
        """Prompt ids for a conversation, ready for the model to answer.

        If the last message is an assistant message with ``prefix=True`` the
        prompt ends inside that message so the model continues it; otherwise it
        ends with the generation prompt for a new assistant turn. ``tools`` are
        rendered in the model's own syntax; a tokenizer without one refuses them
        (``ValueError``): see ``supports_tools``.
        """
        ...

    @property
    def supports_tools(self) -> bool:
        """Whether ``render_chat`` renders tools, tool calls and tool results natively."""
        ...
