"""Wire formats of the chat app's and console's routes (``/auth``, ``/api/...``).

Request bodies are strict (unknown fields are a 422, as on ``/v1``); responses are
built by the small ``*_wire`` functions so every route returns the same shapes.
Conversation fields borrow Mistral's Conversations naming: ``name``,
``instructions`` (the system prompt) and ``completion_args``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from levant.access.keys import KeyInfo
from levant.access.sessions import WebIdentity
from levant.conversations import ConversationInfo, MessageInfo

MAX_TEXT = 200_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Strict):
    """Email and password of a workspace member, or an API key."""

    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1000)
    api_key: str | None = Field(default=None, max_length=200)
    workspace: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_way(self) -> LoginRequest:
        if self.api_key:
            return self
        if not (self.email and self.password):
            raise ValueError("send email and password, or api_key")
        return self


class CompletionArgs(_Strict):
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)


class ConversationCreate(_Strict):
    name: str = Field(default="New chat", min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    instructions: str | None = Field(default=None, max_length=MAX_TEXT)
    completion_args: CompletionArgs = Field(default_factory=CompletionArgs)


class ConversationPatch(_Strict):
    """Fields present are changed; ``null`` clears the system prompt or a completion arg."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    instructions: str | None = Field(default=None, max_length=MAX_TEXT)
    completion_args: CompletionArgs | None = None


class MessageCreate(_Strict):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_TEXT)
    model: str | None = Field(default=None, max_length=200)
    finish_reason: str | None = Field(default=None, max_length=32)


class KeyCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    allowed_models: list[str] | None = Field(default=None, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def identity_wire(identity: WebIdentity) -> dict[str, Any]:
    return {
        "object": "session",
        "display": identity.display,
        "role": identity.role,
        "workspace": {
            "id": identity.principal.workspace_id,
            "name": identity.workspace_name,
            "retention": identity.retention,
        },
        "stores_conversations": identity.retention != "zero",
    }


def message_wire(m: MessageInfo) -> dict[str, Any]:
    return {
        "object": "entry",
        "seq": m.seq,
        "role": m.role,
        "content": m.content,
        "model": m.model,
        "finish_reason": m.finish_reason,
        "created_at": m.created_at.isoformat(),
    }


def conversation_wire(c: ConversationInfo, *, with_messages: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object": "conversation",
        "id": c.id,
        "name": c.name,
        "model": c.model,
        "instructions": c.instructions,
        "completion_args": {"temperature": c.temperature, "max_tokens": c.max_tokens},
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
    }
    if with_messages:
        out["messages"] = [message_wire(m) for m in c.messages]
    return out


def key_wire(k: KeyInfo) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return None if value is None else str(value.isoformat())

    return {
        "object": "api_key",
        "id": k.id,
        "name": k.name,
        "prefix": k.display,
        "status": k.status(),
        "allowed_models": k.allowed_models,
        "created_at": iso(k.created_at),
        "expires_at": iso(k.expires_at),
        "revoked_at": iso(k.revoked_at),
        "last_used_at": iso(k.last_used_at),
    }
