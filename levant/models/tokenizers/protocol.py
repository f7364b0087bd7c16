"""The contract every tokenizer implements, and the chat message it renders.

Callers (the serving layer, the CLI) only ever see ``Tokenizer``; which library
does the work (HF ``tokenizers``, ``mistral-common``) is the loader's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    prefix: bool = False
    """Mistral's assistant prefix: the last assistant message is continued, not closed."""
    name: str | None = None
    tool_call_id: str | None = None


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

    def render_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Prompt ids for a conversation, ready for the model to answer.

        If the last message is an assistant message with ``prefix=True`` the
        prompt ends inside that message so the model continues it; otherwise it
        ends with the generation prompt for a new assistant turn.
        """
        ...
