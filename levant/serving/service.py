"""ModelService: one loaded model — card, tokenizer and engine — that speaks text.

``prepare`` turns chat messages into prompt ids (and refuses prompts that do
not fit the context); ``generate`` runs them through the engine and yields text
deltas, finishing with the reason and the token counts. With an output plan
(``structured``: response formats, tools) the prompt carries the tools, the engine
gets the plan's grammar constraint, and the plan's parser turns the output into
content and ``ToolCalls``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from levant.catalog.card import ModelCard
from levant.engine.async_engine import AsyncEngine
from levant.engine.core import ContextLengthExceeded
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.engine.protocol import FinishReason as EngineFinishReason
from levant.models.tokenizers.protocol import ChatMessage, Tokenizer, ToolCall
from levant.serving.detokenizer import IncrementalDetokenizer
from levant.serving.logprobs import TokenLogprobText, TokenTexts
from levant.serving.stop import StopMatcher
from levant.structured.grammar import GrammarConstraint
from levant.structured.output import OutputPlan, StructuredOutputs
from levant.structured.syntax import OutputParser

FinishReason = EngineFinishReason | Literal["tool_calls"]


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprobText, ...] = ()
    """The tokens produced since the previous delta, when the request asked for
    log-probabilities (``SamplingParams.logprobs``): all of them, including those whose
    text is still held back (or never shown: a stop string, a tool call)."""


@dataclass(frozen=True)
class ToolCalls:
    """The calls the model made; comes once, right before ``Finished("tool_calls")``."""

    calls: list[ToolCall]


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


class ConstraintFailed(RuntimeError):
    """The grammar rejected a token the engine sampled under it (a bug, never the caller's)."""


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
        self._structured: StructuredOutputs | None = None
        self.token_texts = TokenTexts(tokenizer)

    @property
    def structured(self) -> StructuredOutputs:
        """Grammar compilation and tool syntax for this model (built on first use)."""
        if self._structured is None:
            self._structured = StructuredOutputs(self.tokenizer)
        return self._structured

    def check_capacity(
        self,
        prompt_ids: list[int],
        *,
        copies: int = 1,
        cache_salt: str | None = None,
        prefix_cache: bool = True,
    ) -> None:
        """Raise EngineOverloaded now if ``copies`` requests of this prompt would be
        refused, so the API can answer 503 before a stream's headers go out."""
        self.engine.check_capacity(
            prompt_ids, copies=copies, cache_salt=cache_salt, prefix_cache=prefix_cache
        )

    @property
    def max_context(self) -> int:
        return self.engine.engine.max_context

    def prepare(
        self,
        messages: Sequence[ChatMessage],
        max_tokens: int | None,
        plan: OutputPlan | None = None,
    ) -> list[int]:
        """Prompt ids for ``messages`` (with ``plan``'s tools); raises ContextLengthExceeded
        when they cannot fit."""
        ids = plan.render(messages) if plan is not None else self.tokenizer.render_chat(messages)
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
        logprobs: int | None = None,
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
            logprobs=logprobs,
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
        constraint: GrammarConstraint | None = None,
        parser: OutputParser | None = None,
    ) -> AsyncGenerator[TextDelta | ToolCalls | Finished, None]:
        """Text deltas, then ``ToolCalls`` if the parser found any, then ``Finished``.
        ``cache_salt`` (the workspace) keeps prefix-cache entries from being shared across
        tenants. Raises EngineOverloaded (queue full), ContextLengthExceeded, or
        GenerationTimedOut past the deadline. ``prefix_cache`` False (zero retention) keeps
        the prompt out of the prefix cache. ``constraint`` and ``parser`` come fresh from
        an ``OutputPlan``; stop strings apply to content only."""
        request = EngineRequest(
            f"req-{uuid.uuid4().hex}",
            prompt_ids,
            sampling,
            cache_salt=cache_salt,
            timeout_s=self.timeout_s,
            prefix_cache=prefix_cache,
            constraint=constraint,
        )
        detok = IncrementalDetokenizer(self.tokenizer, context=prompt_ids)
        matcher = StopMatcher(list(stop))
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens = len(prompt_ids)
        if sampling.logprobs is not None:
            await asyncio.to_thread(self.token_texts.warm)
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
                calls: list[ToolCall] = []
                if parser is not None:
                    piece = parser.push(out.new_token_ids, piece)
                    if out.finished:
                        parsed = parser.finish()
                        piece += parsed.content
                        calls = parsed.calls
                if out.finished and constraint is not None and constraint.error is not None:
                    raise ConstraintFailed(constraint.error)
                text = matcher.push(piece)
                if out.finished and not matcher.stopped:
                    text += matcher.flush()
                logprobs = tuple(self.token_texts.describe(out.logprobs)) if out.logprobs else ()
                if text or logprobs:
                    yield TextDelta(text, logprobs)
                if calls and not matcher.stopped:
                    yield ToolCalls(calls)
                if matcher.stopped or out.finished:
                    reason: FinishReason = (
                        "stop" if matcher.stopped else (out.finish_reason or "stop")
                    )
                    if calls and not matcher.stopped and reason == "stop":
                        reason = "tool_calls"
                    stats.finish_reason = reason
                    yield Finished(
                        reason, len(prompt_ids), stats.completion_tokens, out.num_cached_tokens
                    )
                    return
