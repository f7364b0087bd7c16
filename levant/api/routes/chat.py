"""``POST /v1/chat/completions``: both dialects, streaming and not; ``n`` choices (each
chunk names its choice ``index``) and, when asked, per-token ``logprobs``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from levant.access.principal import Principal
from levant.api.auth import PrincipalDep
from levant.api.chat_input import output_spec, to_chat_messages
from levant.api.deps import StateDep
from levant.api.dialect import Dialect, detect_dialect
from levant.api.errors import APIError
from levant.api.generation import (
    chunk_wire,
    context_length_error,
    logprobs_wire,
    response_wire,
    start_generation,
    total_usage,
)
from levant.api.models_lookup import card_for, service_for
from levant.api.schemas.chat import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceLogprobs,
    Delta,
    ResponseFunctionCall,
    ResponseToolCall,
    StreamChoice,
    Usage,
)
from levant.api.state import AppState
from levant.api.streaming import sse_event, sse_response
from levant.api.upstream_chat import UpstreamCall, policy_error, upstream_error
from levant.engine.core import ContextLengthExceeded
from levant.models.tokenizers.protocol import ToolCall
from levant.routing import Deployment, DeploymentFailure, NoDeploymentInPolicy
from levant.serving.service import Finished, ModelService, TextDelta
from levant.structured.output import GrammarError, OutputPlan

router = APIRouter()


def _finish_reason(reason: str, dialect: Dialect) -> str:
    # OpenAI has no model_length: its clients know the same condition as "length".
    return "length" if reason == "model_length" and dialect == "openai" else reason


def _wire_calls(calls: list[ToolCall]) -> list[ResponseToolCall]:
    return [
        ResponseToolCall(
            id=c.id, function=ResponseFunctionCall(name=c.name, arguments=c.arguments), index=i
        )
        for i, c in enumerate(calls)
    ]


async def _plan(body: ChatCompletionRequest, service: ModelService) -> OutputPlan | None:
    """The request's response format and tools, compiled (off the event loop); 400 if
    they cannot be enforced."""
    spec = output_spec(body)
    if spec is None:
        return None
    try:
        return await asyncio.to_thread(service.structured.plan, spec)
    except GrammarError as exc:
        raise APIError(400, str(exc), param=exc.param, code="invalid_value") from exc


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    """Route to a deployment inside the workspace's residency policy, then serve there.

    Every response names the serving deployment and region (``levant-deployment``,
    ``levant-region``); when no deployment inside the policy can serve, the answer is
    an error naming the policy — never a deployment outside it.
    """
    if body.uses_openai_fields:
        request.state.dialect = "openai"
    dialect = detect_dialect(request)
    gateway = state.gateway
    card = card_for(state, body.model, principal, require_pulled=not gateway.remote(body.model))
    upstream: UpstreamCall | None = None

    async def attempt(deployment: Deployment) -> Response:
        nonlocal upstream
        if deployment.backend == "local":
            return await _serve_locally(body, dialect, state, principal, deployment)
        if upstream is None:
            upstream = UpstreamCall(state, principal, card, await request.json(), dialect)
        return await upstream.attempt(deployment)

    try:
        routed = await gateway.router.route(card.id, principal.residency, attempt)
    except NoDeploymentInPolicy as exc:
        if upstream is not None:
            upstream.abandon()
        raise policy_error(exc) from exc
    except DeploymentFailure as exc:
        if upstream is not None:
            upstream.abandon()
        raise upstream_error(exc) from exc
    response = routed.value
    response.headers.update(routed.headers)
    return response


async def _serve_locally(
    body: ChatCompletionRequest,
    dialect: Dialect,
    state: AppState,
    principal: Principal,
    deployment: Deployment,
) -> Response:
    try:
        service = await service_for(state, body.model, principal)
    except APIError as exc:
        if exc.status == 404:  # not pulled here: another deployment may serve
            raise DeploymentFailure(deployment.name, exc.message, retryable=True) from exc
        raise
    messages = to_chat_messages(body, service.card)
    plan = await _plan(body, service)
    if plan is not None and plan.grammar is not None and messages[-1].prefix:
        # The grammar describes the whole answer; a prefix would start it half-way.
        raise APIError(
            400,
            "An assistant prefix cannot be combined with response_format or tool calls",
            param=f"messages[{len(body.messages) - 1}].prefix",
            code="invalid_value",
        )
    max_tokens = body.effective_max_tokens
    try:
        prompt_ids = service.prepare(messages, max_tokens, plan)
    except ContextLengthExceeded as exc:
        raise context_length_error(exc, with_max_tokens=bool(max_tokens), param="messages") from exc
    except ValueError as exc:  # the model's chat format cannot express this conversation
        raise APIError(400, str(exc), param="messages", code="invalid_value") from exc
    sampling = service.sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        seed=body.effective_seed,
        top_k=body.top_k or 0,
        min_tokens=body.min_tokens or 0,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=body.engine_logprobs,
    )
    prefix = messages[-1].content if messages[-1].prefix else ""
    model_name = body.model
    with_logprobs = bool(body.logprobs)
    run = await start_generation(
        state,
        principal,
        service,
        prompt_ids,
        sampling,
        body.stop_list,
        max_tokens,
        deployment,
        plan,
        n=body.n or 1,
    )

    if not body.stream:
        results = await run.collect()
        choices = []
        for result in results:
            calls = result.tool_calls
            content: str | None = prefix + result.text
            if calls and not content and dialect == "openai":
                content = None  # OpenAI: a message that only calls tools has null content
            choices.append(
                Choice(
                    index=result.index,
                    message=AssistantMessage(
                        content=content, tool_calls=_wire_calls(calls) if calls else None
                    ),
                    finish_reason=_finish_reason(result.done.finish_reason, dialect),
                    logprobs=logprobs_wire(result.logprobs) if with_logprobs else None,
                )
            )
        response = ChatCompletionResponse(
            id=run.request_id,
            created=run.created,
            model=model_name,
            choices=choices,
            usage=total_usage([r.done for r in results]),
        )
        return JSONResponse(response_wire(response), headers=run.headers)

    include_usage_chunk = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(
        index: int,
        delta: Delta,
        finish: str | None = None,
        usage: Usage | None = None,
        logprobs: ChoiceLogprobs | None = None,
    ) -> bytes:
        c = ChatCompletionChunk(
            id=run.request_id,
            created=run.created,
            model=model_name,
            choices=[
                StreamChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)
            ],
            usage=usage,
        )
        return sse_event(chunk_wire(c))

    def text(index: int, delta: TextDelta) -> bytes:
        logprobs = logprobs_wire(delta.logprobs) if with_logprobs else None
        return chunk(index, Delta(content=delta.text), logprobs=logprobs)

    def finish(index: int, done: Finished, usage: Usage | None) -> list[bytes]:
        # Mistral puts usage on the finishing chunk (of the last choice to finish).
        reason = _finish_reason(done.finish_reason, dialect)
        return [chunk(index, Delta(content=""), reason, usage)]

    def end(usage: Usage) -> list[bytes]:
        # OpenAI clients that asked for include_usage get a final chunk with no choices.
        if not include_usage_chunk:
            return []
        final = ChatCompletionChunk(
            id=run.request_id, created=run.created, model=model_name, choices=[], usage=usage
        )
        return [sse_event(chunk_wire(final))]

    def tool_calls(index: int, calls: list[ToolCall]) -> list[bytes]:
        # Mistral sends every call whole in one delta; OpenAI clients merge index-keyed
        # deltas, so each call comes whole in its own.
        wire = _wire_calls(calls)
        if dialect == "openai":
            return [chunk(index, Delta(tool_calls=[call])) for call in wire]
        return [chunk(index, Delta(content="", tool_calls=wire))]

    events = run.sse(
        dialect,
        first=lambda index: chunk(index, Delta(role="assistant", content=prefix)),
        on_text=text,
        on_finish=finish,
        on_tool_calls=tool_calls,
        on_end=end,
    )
    return sse_response(events, headers=run.headers)
