"""``POST /v1/fim/completions`` request body (Mistral's Codestral FIM).

The response and its stream chunks have the chat completion's shapes (Mistral's
``FIMCompletionResponse`` extends ``ChatCompletionResponse``), so they are reused
from ``schemas.chat``. Unknown fields are refused, as Mistral's spec does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FIMCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str
    """The code before the gap."""
    suffix: str | None = ""
    """The code after the gap; empty: plain completion of ``prompt``."""
    temperature: float | None = Field(default=None, ge=0.0, le=1.5)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=0)
    min_tokens: int | None = Field(default=None, ge=0)
    stream: bool = False
    stop: str | list[str] | None = None
    random_seed: int | None = Field(default=None, ge=0)
    # Accepted for compatibility; they do not change generation.
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = None

    @model_validator(mode="after")
    def _check(self) -> FIMCompletionRequest:
        if len(self.stop_list) > 16:
            raise ValueError("stop accepts at most 16 sequences")
        if (
            self.min_tokens is not None
            and self.max_tokens is not None
            and self.min_tokens > self.max_tokens
        ):
            raise ValueError("min_tokens must not exceed max_tokens")
        return self

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)
