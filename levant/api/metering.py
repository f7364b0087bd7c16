"""One usage row per API request, handed to the batched writer (never blocks the response).

Carries counts and ids only: no prompt or completion text ever reaches it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Literal

from levant.access.principal import Principal
from levant.access.usage import UsageRecord
from levant.api.state import AppState
from levant.serving.service import GenerationStats

Status = Literal["ok", "cancelled", "error"]

LOCAL_DEPLOYMENT = "local"

USAGE_TAG: ContextVar[str | None] = ContextVar("levant_usage_tag", default=None)
"""Set by an in-process caller (the batch runner) around one request: the request's usage
row gets ``<tag>.<request id>`` as its request id, so batch lines are told apart in
the usage table (and a line's rows found by its tag)."""


def record_usage(
    state: AppState,
    principal: Principal,
    *,
    request_id: str,
    model: str,
    stats: GenerationStats,
    started: float,
    status: Status,
    price_micros: int,
    deployment: str = LOCAL_DEPLOYMENT,
    region: str | None = None,
) -> None:
    """Meter what was produced; a cancelled stream is billed for the tokens it got."""
    tag = USAGE_TAG.get()
    if tag is not None:
        request_id = f"{tag}.{request_id}"
    state.usage.submit(
        UsageRecord(
            request_id=request_id,
            workspace_id=principal.workspace_id,
            key_id=None if principal.key_id == "anonymous" else principal.key_id,
            model=model,
            deployment=deployment,
            region=region or state.gateway.region,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            cached_tokens=stats.cached_tokens,
            price_micros=price_micros,
            latency_ms=int((time.monotonic() - started) * 1000),
            status=status,
        )
    )
