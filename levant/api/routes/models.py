"""``GET /v1/models`` and ``GET /v1/models/{id}``: the models this server can serve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from levant.api.auth import PrincipalDep
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.schemas.models import model_card_wire, model_list_wire
from levant.catalog.catalog import ModelNotFound
from levant.serving.registry import ModelNotAvailable

router = APIRouter()


@router.get("/v1/models")
async def list_models(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    cards = [c for c in state.registry.servable_cards() if principal.may_use(c)]
    return model_list_wire(cards)


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    try:
        card = state.registry.resolve(model_id)
        if not principal.may_use(card):
            raise ModelNotFound(model_id)
    except (ModelNotFound, ModelNotAvailable) as exc:
        raise APIError(
            404,
            f"Model '{model_id}' not found",
            type="not_found_error",
            param="model_id",
            code="model_not_found",
        ) from exc
    return model_card_wire(card)
