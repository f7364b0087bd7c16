"""``POST /v1/chat/completions``: both dialects, streaming and not."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from levant.api.admission import admit, release
from levant.api.auth import PrincipalDep
from levant.api.chat_input import to_chat_messages
from levant.api.deps import StateDep
from levant.api.dialect import Dialect, detect_dialect
from levant.api.errors import APIError, error_body
from levant.api.metering import Status, record_usage
from levant.api.models_lookup import service_for
from levant.api.schemas.chat import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    Delta,
    PromptTokensDetails,
    StreamChoice,
    Usage,
)
from levant.api.streaming import DONE, sse_event, sse_response
from levant.engine.core import ContextLengthExceeded
from levant.serving.service import Finished, GenerationStats, TextDelta

router = APIRouter()


def _usage(done: Finished) -> Usage:
    return Usage(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
        num_cached_tokens=done.cached_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=done.cached_tokens),
    )


def _chunk_wire(chunk: ChatCompletionChunk) -> dict[str, object]:
    """``finish_reason`` is always present (null until the end); ``usage`` only at the end."""
    return chunk.model_dump(exclude={"usage"} if chunk.usage is None else set())


def _finish_reason(reason: str, dialect: Dialect) -> str:
    # OpenAI has no model_length: its clients know the same condition as "length".
    return "length" if reason == "model_length" and dialect == "openai" else reason


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    if body.uses_openai_fields:
        request.state.dialect = "openai"
    dialect = detect_dialect(request)
    service = await service_for(state, body.model, principal)
    messages = to_chat_messages(body, service.card)
    max_tokens = body.effective_max_tokens
    try:
        prompt_ids = service.prepare(messages, max_tokens)
    except ContextLengthExceeded as exc:
        raise APIError(
            400,
            f"Prompt of {exc.prompt_tokens} tokens"
            + (" (including max_tokens)" if max_tokens else "")
            + f" exceeds the model's context length of {exc.max_context} tokens",
            param="messages",
            code="context_length_exceeded",
        ) from exc
    sampling = service.sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        seed=body.effective_seed,
        top_k=body.top_k or 0,
        min_tokens=body.min_tokens or 0,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
    )
    prefix = messages[-1].content if messages[-1].prefix else ""
    completion_id = uuid.uuid4().hex
    created = int(time.time())
    model_name = body.model
    stats = GenerationStats()
    events = service.generate(prompt_ids, sampling, body.stop_list, stats)
    started = time.monotonic()

    max_new = max_tokens if max_tokens is not None else service.max_context - len(prompt_ids)
    admission = await admit(state, principal, service.card, len(prompt_ids), max_new)

    def meter(status: Status) -> None:
        price = release(state, admission, stats)
        record_usage(
            state,
            principal,
            request_id=completion_id,
            model=service.card.id,
            stats=stats,
            started=started,
            status=status,
            price_micros=price,
        )

    if not body.stream:
        text = [prefix]
        done: Finished | None = None
        status: Status = "cancelled"  # unless it completes or fails below
        try:
            async for ev in events:
                if isinstance(ev, TextDelta):
                    text.append(ev.text)
                else:
                    done = ev
            status = "ok"
        except Exception:
            status = "error"
            raise
        finally:
            meter(status)
        assert done is not None
        response = ChatCompletionResponse(
            id=completion_id,
            created=created,
            model=model_name,
            choices=[
                Choice(
                    index=0,
                    message=AssistantMessage(content="".join(text)),
                    finish_reason=_finish_reason(done.finish_reason, dialect),
                )
            ],
            usage=_usage(done),
        )
        return JSONResponse(response.model_dump(), headers=admission.headers)

    include_usage_chunk = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: Delta, finish: str | None = None, usage: Usage | None = None) -> bytes:
        c = ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model_name,
            choices=[StreamChoice(index=0, delta=delta, finish_reason=finish)],
            usage=usage,
        )
        return sse_event(_chunk_wire(c))

    async def stream() -> AsyncIterator[bytes]:
        status: Status = "cancelled"  # a client that leaves mid-stream ends here
        yield chunk(Delta(role="assistant", content=prefix))
        try:
            async with aclosing(events):  # a client gone mid-stream cancels generation
                async for ev in events:
                    if isinstance(ev, TextDelta):
                        yield chunk(Delta(content=ev.text))
                        continue
                    usage = _usage(ev)
                    # Mistral puts usage on the finishing chunk; OpenAI clients that
                    # asked for include_usage also get a final chunk with no choices.
                    reason = _finish_reason(ev.finish_reason, dialect)
                    yield chunk(Delta(content=""), reason, usage)
                    if include_usage_chunk:
                        final = ChatCompletionChunk(
                            id=completion_id,
                            created=created,
                            model=model_name,
                            choices=[],
                            usage=usage,
                        )
                        yield sse_event(_chunk_wire(final))
            status = "ok"
        except Exception as exc:  # headers are sent: report in-band, never a trace
            status = "error"
            err = APIError(500, f"Generation failed: {type(exc).__name__}", type="internal_error")
            yield sse_event(error_body(err, dialect))
        finally:
            meter(status)
        yield DONE

    return sse_response(stream(), headers=admission.headers)
