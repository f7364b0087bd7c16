"""Admission: may this request run now? Spend budget first, then rate and token limits.

``admit`` reserves the request's worst case (prompt + max new tokens, worst-case
price) atomically and raises a 429 APIError when a limit says no; ``release``
settles the reservation with what was really used and returns the price.
Both are called by the route around generation; policy itself lives in
``levant.access.limits``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from levant.access.limits import Decision, Reservation, SpendHold
from levant.access.pricing import Price, cost_micros, price_of, worst_case_micros
from levant.access.principal import Principal
from levant.api.errors import APIError
from levant.api.state import AppState
from levant.catalog.card import ModelCard
from levant.serving.service import GenerationStats


@dataclass
class Admission:
    price: Price
    reservation: Reservation | None
    hold: SpendHold | None
    headers: dict[str, str] = field(default_factory=dict)


def _refusal(decision: Decision) -> APIError:
    headers = dict(decision.headers)
    if decision.never_fits:
        return APIError(
            400,
            decision.message or "The request is larger than the workspace's limit allows",
            type="invalid_request_error",
            code="exceeds_limit",
            headers=headers,
        )
    return APIError(
        429,
        decision.message or f"Rate limit reached: {decision.limit_name}",
        type="rate_limit_error",
        code=decision.limit_name,
        headers=headers,
    )


def card_price(card: ModelCard) -> Price:
    return price_of(card.pricing.model_dump() if card.pricing else None)


async def admit(
    state: AppState, principal: Principal, card: ModelCard, prompt_tokens: int, max_new: int
) -> Admission:
    limits = state.limits
    price = card_price(card)
    applied = limits.workspace.applied_cached(principal.workspace_id, principal.key_id, card.id)
    if applied is None:  # not cached: read the database off the event loop
        applied = await asyncio.to_thread(
            limits.workspace.applied, principal.workspace_id, principal.key_id, card.id
        )
    spend_decision, hold = await limits.spend.reserve(
        principal.workspace_id,
        applied.monthly_budget_micros,
        worst_case_micros(price, prompt_tokens, max_new),
    )
    if not spend_decision.allowed:
        raise _refusal(spend_decision)
    decision, reservation = await limits.limiter.reserve(
        applied.scope, applied.policy, prompt_tokens + max_new
    )
    if not decision.allowed:
        if hold is not None:
            limits.spend.settle(hold, 0)
        raise _refusal(decision)
    return Admission(price, reservation, hold, dict(decision.headers))


def release(state: AppState, admission: Admission, stats: GenerationStats) -> int:
    """Settle with real usage; returns the request's price in micros.

    Runs in a ``finally`` that may sit inside a cancelled scope (a client that
    left), so the async settle is scheduled as its own task rather than awaited.
    """
    price = cost_micros(
        admission.price, stats.prompt_tokens, stats.completion_tokens, stats.cached_tokens
    )
    if admission.hold is not None:
        state.limits.spend.settle(admission.hold, price)
    if admission.reservation is not None:
        used = stats.prompt_tokens + stats.completion_tokens
        _detach(state, state.limits.limiter.settle(admission.reservation, used))
    return price


def _detach(state: AppState, coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    state.background.add(task)
    task.add_done_callback(state.background.discard)
