"""``POST /v1/fim/completions``: Codestral-style fill-in-the-middle, streaming and not.

The prompt is the tokenizer's FIM encoding of ``prompt`` and ``suffix``; the answer
is the middle, in chat completion shapes (Mistral's FIM response extends them).
Models whose card or tokenizer has no FIM are refused with a 400 naming
``completion_fim``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from levant.api.auth import PrincipalDep
from levant.api.deps import StateDep
from levant.api.dialect import detect_dialect
from levant.api.errors import APIError
from levant.api.generation import (
    check_fits,
    chunk_wire,
    context_length_error,
    start_generation,
    usage_of,
)
from levant.api.models_lookup import service_for
from levant.api.schemas.chat import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionResponse,
    Choice,
    Delta,
    StreamChoice,
    Usage,
)
from levant.api.schemas.fim import FIMCompletionRequest
from levant.api.streaming import sse_event, sse_response
from levant.engine.core import ContextLengthExceeded
from levant.models.tokenizers.fim import FIMUnsupported, encode_fim
from levant.serving.service import Finished

router = APIRouter()


@router.post("/v1/fim/completions", response_model=None)
async def fim_completions(
    body: FIMCompletionRequest, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    dialect = detect_dialect(request)
    service = await service_for(state, body.model, principal, capability="completion_fim")
    try:
        prompt_ids = encode_fim(service.tokenizer, body.prompt, body.suffix or "")
    except FIMUnsupported as exc:  # the card says FIM, the tokenizer cannot
        raise APIError(
            400,
            f"Model '{service.card.id}' does not support fill-in-the-middle completions "
            f"(capability: completion_fim): {exc}",
            param="model",
            code="unsupported_capability",
        ) from exc
    try:
        check_fits(service, prompt_ids, body.max_tokens)
    except ContextLengthExceeded as exc:
        raise context_length_error(
            exc, with_max_tokens=body.max_tokens is not None, param="prompt"
        ) from exc
    sampling = service.sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        seed=body.random_seed,
        min_tokens=body.min_tokens or 0,
    )
    run = await start_generation(
        state, principal, service, prompt_ids, sampling, body.stop_list, body.max_tokens
    )

    if not body.stream:
        (result,) = await run.collect()
        text, done = result.text, result.done
        response = ChatCompletionResponse(
            id=run.request_id,
            created=run.created,
            model=body.model,
            choices=[
                Choice(
                    index=0,
                    message=AssistantMessage(content=text),
                    finish_reason=done.finish_reason,
                )
            ],
            usage=usage_of(done),
        )
        return JSONResponse(response.model_dump(), headers=run.headers)

    def chunk(delta: Delta, finish: str | None = None, usage: Usage | None = None) -> bytes:
        # FIM has no n: one choice, index 0.
        c = ChatCompletionChunk(
            id=run.request_id,
            created=run.created,
            model=body.model,
            choices=[StreamChoice(index=0, delta=delta, finish_reason=finish)],
            usage=usage,
        )
        return sse_event(chunk_wire(c))

    def finish(_: int, done: Finished, usage: Usage | None) -> list[bytes]:
        # Usage rides on the finishing chunk, as in Mistral's chat stream.
        return [chunk(Delta(content=""), done.finish_reason, usage)]

    events = run.sse(
        dialect,
        first=lambda _: chunk(Delta(role="assistant", content="")),
        on_text=lambda _, delta: chunk(Delta(content=delta.text)),
        on_finish=finish,
    )
    return sse_response(events, headers=run.headers)
