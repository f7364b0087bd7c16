"""ModelService: one loaded model — card, tokenizer and engine — that speaks text.

``prepare`` turns chat messages into prompt ids (and refuses prompts that do
not fit the context); ``generate`` runs them through the engine and yields text
deltas, finishing with the reason and the token counts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from levant.catalog.card import ModelCard
from levant.engine.async_engine import AsyncEngine
from levant.engine.core import ContextLengthExceeded
from levant.engine.protocol import EngineRequest, FinishReason, SamplingParams
from levant.models.tokenizers.protocol import ChatMessage, Tokenizer
from levant.serving.detokenizer import IncrementalDetokenizer
from levant.serving.stop import StopMatcher


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass
class GenerationStats:
    """Token counts as generation goes, so a cancelled request can still be metered."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: FinishReason | None = None


class GenerationTimedOut(RuntimeError):
    """The engine stopped the request at its deadline (``timeout_s``)."""


class ModelService:
    def __init__(
        self,
        card: ModelCard,
        tokenizer: Tokenizer,
        engine: AsyncEngine,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.card = card
        self.tokenizer = tokenizer
        self.engine = engine
        self.timeout_s = timeout_s
        """Per-request deadline handed to the engine (queued or running)."""

    def check_capacity(self, prompt_tokens: int) -> None:
        """Raise EngineOverloaded now if a request of this size would be refused, so
        the API can answer 503 before a stream's headers go out."""
        self.engine.check_capacity(prompt_tokens)

    @property
    def max_context(self) -> int:
        return self.engine.engine.max_context

    def prepare(self, messages: Sequence[ChatMessage], max_tokens: int | None) -> list[int]:
        """Prompt ids for ``messages``; raises ContextLengthExceeded when they cannot fit."""
        ids = self.tokenizer.render_chat(messages)
        if len(ids) >= self.max_context:
            raise ContextLengthExceeded(len(ids), self.max_context)
        if max_tokens is not None and len(ids) + max_tokens > self.max_context:
            raise ContextLengthExceeded(len(ids) + max_tokens, self.max_context)
        return ids

    def sampling(
        self,
        *,
        temperature: float | None,
        top_p: float,
        max_tokens: int | None,
        seed: int | None,
        top_k: int = 0,
        min_tokens: int = 0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
    ) -> SamplingParams:
        if temperature is None:
            temperature = self.card.default_model_temperature
        return SamplingParams(
            temperature=0.7 if temperature is None else temperature,
            top_p=top_p,
            top_k=top_k,
            min_tokens=min_tokens,
            max_tokens=max_tokens,
            seed=seed,
            stop_token_ids=self.tokenizer.eos_ids,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
        )

    async def generate(
        self,
        prompt_ids: list[int],
        sampling: SamplingParams,
        stop: Sequence[str] = (),
        stats: GenerationStats | None = None,
        *,
        cache_salt: str | None = None,
        prefix_cache: bool = True,
    ) -> AsyncGenerator[TextDelta | Finished, None]:
        """Text deltas, then ``Finished``. ``cache_salt`` (the workspace) keeps prefix-cache
        entries from being shared across tenants. Raises EngineOverloaded (queue full),
        ContextLengthExceeded, or GenerationTimedOut past the deadline. ``prefix_cache``
        False (zero retention) keeps the prompt out of the prefix cache."""
        request = EngineRequest(
            f"req-{uuid.uuid4().hex}",
            prompt_ids,
            sampling,
            cache_salt=cache_salt,
            timeout_s=self.timeout_s,
            prefix_cache=prefix_cache,
        )
        detok = IncrementalDetokenizer(self.tokenizer, context=prompt_ids)
        matcher = StopMatcher(list(stop))
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens = len(prompt_ids)
        # aclosing: leaving this loop early (a stop string, a client gone)
        # closes the engine stream, which cancels the request within one step.
        async with aclosing(self.engine.generate(request)) as outputs:
            async for out in outputs:
                stats.completion_tokens += len(out.new_token_ids)
                stats.cached_tokens = out.num_cached_tokens
                if out.finish_reason == "abort":  # only the deadline aborts a stream still read
                    raise GenerationTimedOut(f"generation stopped after {self.timeout_s} s")
                piece = detok.push(out.new_token_ids)
                if out.finished:
                    piece += detok.flush()
                text = matcher.push(piece)
                if out.finished and not matcher.stopped:
                    text += matcher.flush()
                if text:
                    yield TextDelta(text)
                if matcher.stopped or out.finished:
                    reason: FinishReason = (
                        "stop" if matcher.stopped else (out.finish_reason or "stop")
                    )
                    stats.finish_reason = reason
                    yield Finished(
                        reason, len(prompt_ids), stats.completion_tokens, out.num_cached_tokens
                    )
                    return
