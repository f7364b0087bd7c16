"""One admitted, metered run of ``ModelService.generate``: what chat and FIM completions share.

``start_generation`` reserves the request's worst case (admission) before the first
token; whatever happens after — completion, failure, a client gone mid-stream —
settles the reservation and writes one usage row. The run leaves either collected
(``collect``) or framed as server-sent events ending in ``data: [DONE]`` (``sse``);
the route only says how its own dialect spells a text delta and the finish. A request
of ``n`` choices is ``n`` runs of the same prompt, admitted and metered as one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from levant.access.principal import Principal
from levant.api.admission import Admission, admit, release
from levant.api.dialect import Dialect
from levant.api.errors import APIError, error_body
from levant.api.metering import LOCAL_DEPLOYMENT, Status, record_usage
from levant.api.schemas.chat import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChoiceLogprobs,
    PromptTokensDetails,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from levant.api.state import AppState
from levant.api.streaming import DONE, sse_event
from levant.engine.errors import ContextLengthExceeded, EngineOverloaded
from levant.engine.protocol import SamplingParams, uses_prefix_cache_for
from levant.models.tokenizers.protocol import ToolCall
from levant.routing import Deployment
from levant.serving.logprobs import TokenLogprobText
from levant.serving.service import (
    Finished,
    GenerationStats,
    GenerationTimedOut,
    ModelService,
    TextDelta,
    ToolCalls,
)
from levant.structured.output import OutputPlan


def usage_of(done: Finished) -> Usage:
    return Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
        num_cached_tokens=done.cached_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=done.cached_tokens),
    )


def chunk_wire(chunk: ChatCompletionChunk) -> dict[str, object]:
    """``finish_reason`` is always present (null until the end); ``usage`` only at the end;
    ``delta.tool_calls`` only in the deltas that carry calls."""
    exclude: dict[str, Any] = {}
    if chunk.usage is None:
        exclude["usage"] = True
    drop: dict[int, Any] = {}
    for i, c in enumerate(chunk.choices):
        fields: dict[str, Any] = {}
        if c.delta.tool_calls is None:
            fields["delta"] = {"tool_calls"}
        if c.logprobs is None:
            fields["logprobs"] = True
        if fields:
            drop[i] = fields
    if drop:
        exclude["choices"] = drop
    return chunk.model_dump(exclude=exclude)


def response_wire(response: ChatCompletionResponse) -> dict[str, object]:
    """``logprobs`` only on the choices of a request that asked for them."""
    drop = {i: {"logprobs"} for i, c in enumerate(response.choices) if c.logprobs is None}
    return response.model_dump(exclude={"choices": drop} if drop else None)


def logprobs_wire(tokens: Sequence[TokenLogprobText]) -> ChoiceLogprobs:
    """OpenAI's ``choices[i].logprobs`` (with Mistral's ``token_id``)."""
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=list(t.bytes),
                token_id=t.token_id,
                top_logprobs=[
                    TopLogprob(
                        token=top.token,
                        logprob=top.logprob,
                        bytes=list(top.bytes),
                        token_id=top.token_id,
                    )
                    for top in t.top
                ],
            )
            for t in tokens
        ]
    )


def context_length_error(
    exc: ContextLengthExceeded, *, with_max_tokens: bool, param: str
) -> APIError:
    """The 400 for a prompt that cannot fit, naming both numbers."""
    return APIError(
        400,
        f"Prompt of {exc.prompt_tokens} tokens"
        + (" (including max_tokens)" if with_max_tokens else "")
        + f" exceeds the model's context length of {exc.max_context} tokens",
        param=param,
        code="context_length_exceeded",
    )


def overloaded_error(exc: EngineOverloaded) -> APIError:
    """503 with Retry-After: the server is at capacity (not the caller's rate limit, 429)."""
    return APIError(
        503,
        f"The server is at capacity ({exc.reason}); retry after {exc.retry_after_s} s",
        type="service_unavailable",
        code="capacity_exceeded",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def failure_error(exc: Exception) -> APIError:
    """The error for a generation that failed after it was admitted."""
    if isinstance(exc, EngineOverloaded):
        return overloaded_error(exc)
    if isinstance(exc, GenerationTimedOut):
        return APIError(504, f"Generation timed out: {exc}", type="timeout_error", code="timeout")
    return APIError(500, f"Generation failed: {type(exc).__name__}", type="internal_error")


def check_fits(service: ModelService, prompt_ids: Sequence[int], max_tokens: int | None) -> None:
    """Raise ContextLengthExceeded unless the prompt (and max_tokens) fit the context,
    by the same rule as ``ModelService.prepare``: at least one token must be generable."""
    if len(prompt_ids) >= service.max_context:
        raise ContextLengthExceeded(len(prompt_ids), service.max_context)
    if max_tokens is not None and len(prompt_ids) + max_tokens > service.max_context:
        raise ContextLengthExceeded(len(prompt_ids) + max_tokens, service.max_context)


@dataclass(frozen=True)
class ChoiceResult:
    """One collected choice: its text, how it finished, its calls and log-probabilities."""

    index: int
    text: str
    done: Finished
    tool_calls: list[ToolCall]
    logprobs: list[TokenLogprobText]


Event = TextDelta | ToolCalls | Finished


def total_stats(parts: Sequence[GenerationStats]) -> GenerationStats:
    """One request's counts over its choices: the prompt (and its cache hit) once, the
    completions summed."""
    first = parts[0]
    return GenerationStats(
        prompt_tokens=first.prompt_tokens,
        completion_tokens=sum(p.completion_tokens for p in parts),
        cached_tokens=first.cached_tokens,
        finish_reason=first.finish_reason,
    )


def total_usage(dones: Sequence[Finished]) -> Usage:
    """Usage of ``n`` choices: the prompt counted once, completion tokens summed."""
    completion = sum(d.completion_tokens for d in dones)
    first = dones[0]
    return Usage(
        prompt_tokens=first.prompt_tokens,
        completion_tokens=completion,
        total_tokens=first.prompt_tokens + completion,
        num_cached_tokens=first.cached_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=first.cached_tokens),
    )


async def merge_choices(
    streams: Sequence[AsyncGenerator[Event, None]],
) -> AsyncGenerator[tuple[int, Event], None]:
    """The events of every choice as they come, tagged with the choice index. Closing
    the merge (or a failure in one choice) closes every stream, which cancels their
    engine requests."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as only:
            async for ev in only:
                yield 0, ev
        return
    queue: asyncio.Queue[tuple[int, Event | Exception | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncGenerator[Event, None]) -> None:
        try:
            async with aclosing(stream):
                async for ev in stream:
                    queue.put_nowait((index, ev))
        except Exception as exc:
            queue.put_nowait((index, exc))
            return
        queue.put_nowait((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Generation:
    """One admitted request of ``n`` choices (``events[i]`` is choice ``i``'s run)."""

    state: AppState
    principal: Principal
    service: ModelService
    events: list[AsyncGenerator[Event, None]]
    stats: list[GenerationStats]
    admission: Admission
    request_id: str
    created: int
    started: float
    deployment: str = LOCAL_DEPLOYMENT
    region: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Rate-limit headers for the response."""
        return self.admission.headers

    @property
    def n(self) -> int:
        return len(self.events)

    def _meter(self, status: Status) -> None:
        stats = total_stats(self.stats)
        price = release(self.state, self.admission, stats)
        record_usage(
            self.state,
            self.principal,
            request_id=self.request_id,
            model=self.service.card.id,
            stats=stats,
            started=self.started,
            status=status,
            price_micros=price,
            deployment=self.deployment,
            region=self.region,
        )

    async def collect(self) -> list[ChoiceResult]:
        """Run every choice to the end; their texts, finishes, calls and logprobs."""
        text: list[list[str]] = [[] for _ in self.events]
        calls: list[list[ToolCall]] = [[] for _ in self.events]
        logprobs: list[list[TokenLogprobText]] = [[] for _ in self.events]
        done: list[Finished | None] = [None for _ in self.events]
        status: Status = "cancelled"  # unless it completes or fails below
        try:
            async with aclosing(merge_choices(self.events)) as merged:
                async for i, ev in merged:
                    if isinstance(ev, TextDelta):
                        text[i].append(ev.text)
                        logprobs[i].extend(ev.logprobs)
                    elif isinstance(ev, ToolCalls):
                        calls[i] = ev.calls
                    else:
                        done[i] = ev
            status = "ok"
        except Exception as exc:
            status = "error"
            raise failure_error(exc) from exc
        finally:
            self._meter(status)
        results = []
        for i, finished in enumerate(done):
            assert finished is not None  # generate() always ends with Finished
            results.append(ChoiceResult(i, "".join(text[i]), finished, calls[i], logprobs[i]))
        return results

    async def sse(
        self,
        dialect: Dialect,
        *,
        first: Callable[[int], bytes] | None,
        on_text: Callable[[int, TextDelta], bytes],
        on_finish: Callable[[int, Finished, Usage | None], Iterable[bytes]],
        on_tool_calls: Callable[[int, list[ToolCall]], Iterable[bytes]] | None = None,
        on_end: Callable[[Usage], Iterable[bytes]] | None = None,
    ) -> AsyncIterator[bytes]:
        """Server-sent events: ``first(i)`` for every choice, then each choice's text
        deltas, tool-call events and finish events as they come (interleaved), then
        ``on_end`` and ``data: [DONE]``. The finish of the last choice to end gets the
        request's usage (the others None). A failure after the headers went out is
        reported in-band in ``dialect``'s error shape, never as a trace."""
        status: Status = "cancelled"  # a client that leaves mid-stream ends here
        if first is not None:
            for i in range(self.n):
                yield first(i)
        finished: list[Finished] = []
        try:
            async with aclosing(merge_choices(self.events)) as merged:
                async for i, ev in merged:
                    if isinstance(ev, TextDelta):
                        yield on_text(i, ev)
                    elif isinstance(ev, ToolCalls):
                        for event in on_tool_calls(i, ev.calls) if on_tool_calls else ():
                            yield event
                    else:
                        finished.append(ev)
                        usage = total_usage(finished) if len(finished) == self.n else None
                        for event in on_finish(i, ev, usage):
                            yield event
            if on_end is not None:
                for event in on_end(total_usage(finished)):
                    yield event
            status = "ok"
        except Exception as exc:
            status = "error"
            yield sse_event(error_body(failure_error(exc), dialect))
        finally:
            self._meter(status)
        yield DONE


def child_seed(seed: int | None, index: int) -> int | None:
    """Choice ``index``'s seed: the request's for choice 0, ``seed + index`` after (as
    vLLM derives its parallel-sampling children), so choices differ but repeat."""
    if seed is None or index == 0:
        return seed
    return (seed + index) % (1 << 63)


async def start_generation(
    state: AppState,
    principal: Principal,
    service: ModelService,
    prompt_ids: list[int],
    sampling: SamplingParams,
    stop: Sequence[str],
    max_tokens: int | None,
    deployment: Deployment | None = None,
    plan: OutputPlan | None = None,
    n: int = 1,
) -> Generation:
    """Admit the request (429/400 from limits) and set up its generation; nothing runs
    until the result is collected or streamed. ``plan`` (response format, tools) gives
    each run its grammar constraint and output parser.

    ``n`` > 1 fans out ``n`` engine requests for the same prompt (parallel sampling, as
    vLLM does): the prefix cache shares the prompt's blocks between them, choice ``i``
    samples with ``child_seed(seed, i)``, and admission reserves ``n`` x max_tokens."""
    try:
        service.check_capacity(
            prompt_ids,
            copies=n,
            cache_salt=principal.workspace_id,
            prefix_cache=uses_prefix_cache_for(not principal.zero_retention, sampling.seed),
        )
    except EngineOverloaded as exc:
        raise overloaded_error(exc) from exc
    max_new = max_tokens if max_tokens is not None else service.max_context - len(prompt_ids)
    admission = await admit(state, principal, service.card, len(prompt_ids), max_new * n)
    stats = [GenerationStats() for _ in range(n)]
    events = [
        service.generate(
            prompt_ids,
            replace(sampling, seed=child_seed(sampling.seed, i)),
            stop,
            stats[i],
            cache_salt=principal.workspace_id,
            prefix_cache=not principal.zero_retention,
            constraint=plan.constraint() if plan is not None else None,
            parser=plan.parser() if plan is not None else None,
        )
        for i in range(n)
    ]
    return Generation(
        state=state,
        principal=principal,
        service=service,
        events=events,
        stats=stats,
        admission=admission,
        request_id=uuid.uuid4().hex,
        created=int(time.time()),
        started=time.monotonic(),
        deployment=deployment.name if deployment else LOCAL_DEPLOYMENT,
        region=deployment.region if deployment else None,
    )
