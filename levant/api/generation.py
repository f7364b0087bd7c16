"""One admitted, metered run of ``ModelService.generate``: what chat and FIM completions share.

``start_generation`` reserves the request's worst case (admission) before the first
token; whatever happens after — completion, failure, a client gone mid-stream —
settles the reservation and writes one usage row. The run leaves either collected
(``collect``) or framed as server-sent events ending in ``data: [DONE]`` (``sse``);
the route only says how its own dialect spells a text delta and the finish.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from levant.access.principal import Principal
from levant.api.admission import Admission, admit, release
from levant.api.dialect import Dialect
from levant.api.errors import APIError, error_body
from levant.api.metering import LOCAL_DEPLOYMENT, Status, record_usage
from levant.api.schemas.chat import ChatCompletionChunk, PromptTokensDetails, Usage
from levant.api.state import AppState
from levant.api.streaming import DONE, sse_event
from levant.engine.errors import ContextLengthExceeded, EngineOverloaded
from levant.engine.protocol import SamplingParams
from levant.models.tokenizers.protocol import ToolCall
from levant.routing import Deployment
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
    no_calls = {
        i: {"delta": {"tool_calls"}}
        for i, c in enumerate(chunk.choices)
        if c.delta.tool_calls is None
    }
    if no_calls:
        exclude["choices"] = no_calls
    return chunk.model_dump(exclude=exclude)


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


@dataclass
class Generation:
    state: AppState
    principal: Principal
    service: ModelService
    events: AsyncGenerator[TextDelta | ToolCalls | Finished, None]
    stats: GenerationStats
    admission: Admission
    request_id: str
    created: int
    started: float
    deployment: str = LOCAL_DEPLOYMENT
    region: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    """The calls the model made (set once ``collect`` returns)."""

    @property
    def headers(self) -> dict[str, str]:
        """Rate-limit headers for the response."""
        return self.admission.headers

    def _meter(self, status: Status) -> None:
        price = release(self.state, self.admission, self.stats)
        record_usage(
            self.state,
            self.principal,
            request_id=self.request_id,
            model=self.service.card.id,
            stats=self.stats,
            started=self.started,
            status=status,
            price_micros=price,
            deployment=self.deployment,
            region=self.region,
        )

    async def collect(self) -> tuple[str, Finished]:
        """Run to the end; the whole text and how it finished (calls: ``tool_calls``)."""
        text: list[str] = []
        done: Finished | None = None
        status: Status = "cancelled"  # unless it completes or fails below
        try:
            async for ev in self.events:
                if isinstance(ev, TextDelta):
                    text.append(ev.text)
                elif isinstance(ev, ToolCalls):
                    self.tool_calls = ev.calls
                else:
                    done = ev
            status = "ok"
        except Exception as exc:
            status = "error"
            raise failure_error(exc) from exc
        finally:
            self._meter(status)
        assert done is not None  # generate() always ends with Finished
        return "".join(text), done

    async def sse(
        self,
        dialect: Dialect,
        *,
        first: bytes | None,
        on_text: Callable[[str], bytes],
        on_finish: Callable[[Finished], Iterable[bytes]],
        on_tool_calls: Callable[[list[ToolCall]], Iterable[bytes]] | None = None,
    ) -> AsyncIterator[bytes]:
        """Server-sent events: ``first`` (if any), one event per text delta, the tool-call
        events, the finish events, then ``data: [DONE]``. A failure after the headers went
        out is reported in-band in ``dialect``'s error shape, never as a trace."""
        status: Status = "cancelled"  # a client that leaves mid-stream ends here
        if first is not None:
            yield first
        try:
            async with aclosing(self.events):  # a client gone mid-stream cancels generation
                async for ev in self.events:
                    if isinstance(ev, TextDelta):
                        yield on_text(ev.text)
                    elif isinstance(ev, ToolCalls):
                        self.tool_calls = ev.calls
                        for event in on_tool_calls(ev.calls) if on_tool_calls else ():
                            yield event
                    else:
                        for event in on_finish(ev):
                            yield event
            status = "ok"
        except Exception as exc:
            status = "error"
            yield sse_event(error_body(failure_error(exc), dialect))
        finally:
            self._meter(status)
        yield DONE


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
) -> Generation:
    """Admit the request (429/400 from limits) and set up its generation; nothing runs
    until the result is collected or streamed. ``plan`` (response format, tools) gives
    the run its grammar constraint and output parser."""
    try:
        service.check_capacity(len(prompt_ids))
    except EngineOverloaded as exc:
        raise overloaded_error(exc) from exc
    max_new = max_tokens if max_tokens is not None else service.max_context - len(prompt_ids)
    admission = await admit(state, principal, service.card, len(prompt_ids), max_new)
    stats = GenerationStats()
    return Generation(
        state=state,
        principal=principal,
        service=service,
        events=service.generate(
            prompt_ids,
            sampling,
            stop,
            stats,
            cache_salt=principal.workspace_id,
            prefix_cache=not principal.zero_retention,
            constraint=plan.constraint() if plan is not None else None,
            parser=plan.parser() if plan is not None else None,
        ),
        stats=stats,
        admission=admission,
        request_id=uuid.uuid4().hex,
        created=int(time.time()),
        started=time.monotonic(),
        deployment=deployment.name if deployment else LOCAL_DEPLOYMENT,
        region=deployment.region if deployment else None,
    )
