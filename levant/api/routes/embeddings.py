"""``POST /v1/embeddings``: Mistral's and OpenAI's embeddings, one route.

Every input is tokenized and checked before anything runs: an input longer than
the model reads is a 400 naming both numbers, never silently truncated. The
request is admitted and metered like a completion with no output tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter
from fastapi.responses import Response

from levant.api.admission import admit, release
from levant.api.auth import PrincipalDep
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.metering import Status, record_usage
from levant.api.models_lookup import embedder_for
from levant.api.schemas.embeddings import MAX_INPUTS, EmbeddingRequest
from levant.embeddings import EmbeddingService, InputTooLong
from levant.embeddings.output import (
    EncodingFormat,
    OutputDtype,
    output_dimension,
    quantize,
    to_wire,
    truncate,
)
from levant.serving.service import GenerationStats

router = APIRouter()


def _check_inputs(body: EmbeddingRequest) -> list[str]:
    texts = body.texts
    if not texts:
        raise APIError(400, "input must not be an empty list", param="input", code="invalid_value")
    if len(texts) > MAX_INPUTS:
        raise APIError(
            400,
            f"input has {len(texts)} texts; at most {MAX_INPUTS} are accepted per request",
            param="input",
            code="invalid_value",
        )
    return texts


def _dimension(service: EmbeddingService, body: EmbeddingRequest) -> int:
    spec = service.card.embedding
    assert spec is not None  # embedder_for only returns embedding models
    try:
        dimension = output_dimension(spec, body.effective_dimension)
    except ValueError as exc:
        param = "output_dimension" if body.output_dimension is not None else "dimensions"
        raise APIError(
            400, f"Model '{service.card.id}': {exc}", param=param, code="unsupported_capability"
        ) from exc
    if body.output_dtype in ("int8", "uint8") and not service.normalized:
        raise APIError(
            400,
            f"output_dtype {body.output_dtype} needs unit-length embeddings, and model "
            f"'{service.card.id}' does not normalise its embeddings",
            param="output_dtype",
            code="unsupported_capability",
        )
    return dimension


async def _tokenize(
    service: EmbeddingService, body: EmbeddingRequest, texts: list[str]
) -> list[list[int]]:
    try:
        return await service.tokenize(texts)
    except InputTooLong as exc:
        single = isinstance(body.input, str)
        raise APIError(
            400,
            f"{'Input' if single else f'Input {exc.index}'} has {exc.tokens} tokens, more than "
            f"the {exc.limit} tokens model '{service.card.id}' reads per input",
            param="input" if single else f"input[{exc.index}]",
            code="context_length_exceeded",
        ) from exc


def _render(
    request_id: str,
    model: str,
    vectors: npt.NDArray[np.float32],
    *,
    dimension: int,
    renormalize: bool,
    dtype: OutputDtype,
    encoding: EncodingFormat,
    prompt_tokens: int,
) -> bytes:
    """The response body (built off the event loop: thousands of vectors take a while)."""
    values = quantize(truncate(vectors, dimension, renormalize=renormalize), dtype)
    body = {
        "id": request_id,
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": e, "index": i}
            for i, e in enumerate(to_wire(values, encoding))
        ],
        "model": model,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 0,
            "total_tokens": prompt_tokens,
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


@router.post("/v1/embeddings", response_model=None)
async def create_embeddings(
    body: EmbeddingRequest, state: StateDep, principal: PrincipalDep
) -> Response:
    texts = _check_inputs(body)
    service = await embedder_for(state, body.model, principal)
    dimension = _dimension(service, body)
    ids = await _tokenize(service, body, texts)
    prompt_tokens = sum(len(row) for row in ids)

    request_id = uuid.uuid4().hex
    started = time.monotonic()
    admission = await admit(state, principal, service.card, prompt_tokens, 0)
    stats = GenerationStats(prompt_tokens=prompt_tokens)
    status: Status = "cancelled"  # unless it completes or fails below
    try:
        vectors = await service.embed(ids)
        content = await asyncio.to_thread(
            _render,
            request_id,
            body.model,
            vectors,
            dimension=dimension,
            renormalize=service.normalized,
            dtype=body.output_dtype,
            encoding=body.encoding_format,
            prompt_tokens=prompt_tokens,
        )
        status = "ok"
    except Exception:
        status = "error"
        raise
    finally:
        price = release(state, admission, stats)
        record_usage(
            state,
            principal,
            request_id=request_id,
            model=service.card.id,
            stats=stats,
            started=started,
            status=status,
            price_micros=price,
        )
    return Response(content, media_type="application/json", headers=admission.headers)
