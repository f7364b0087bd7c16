"""Errors the engine raises to its callers; the API maps each to an HTTP status."""

from __future__ import annotations


class ContextLengthExceeded(ValueError):
    """The prompt (plus what must be generated) does not fit the context: a 400."""

    def __init__(self, prompt_tokens: int, max_context: int) -> None:
        super().__init__(
            f"prompt has {prompt_tokens} tokens but the model's context is {max_context} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context


class EngineOverloaded(RuntimeError):
    """The waiting queue is full: a 503 with ``Retry-After: retry_after_s`` (whole seconds)."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(f"engine overloaded: {reason}; retry after {retry_after_s} s")
        self.reason = reason
        self.retry_after_s = retry_after_s
