"""Resolve a requested model name to a loaded service, mapping misses to API errors."""

from __future__ import annotations

from levant.access.principal import Principal
from levant.api.errors import APIError
from levant.api.state import AppState
from levant.catalog.catalog import ModelNotFound
from levant.serving.registry import ModelNotAvailable
from levant.serving.service import ModelService


async def service_for(state: AppState, name: str, principal: Principal) -> ModelService:
    """The loaded service for ``name``: 404 if unknown or not pulled, 403 out of scope."""
    try:
        card = state.registry.resolve(name)
        if card.track == "commercial" and card.id not in principal.grants:
            raise ModelNotFound(name)  # invisible without a grant: same answer as unknown
    except (ModelNotFound, ModelNotAvailable) as exc:
        raise APIError(
            404, _missing(name, exc), type="not_found_error", param="model", code="model_not_found"
        ) from exc
    if not principal.scopes.allows_model(card.id):
        raise APIError(
            403,
            f"This API key may not use model '{name}'",
            type="permission_error",
            param="model",
            code="model_not_allowed",
        )
    return await state.registry.get(card.id)


def _missing(name: str, exc: Exception) -> str:
    if isinstance(exc, ModelNotAvailable):
        return str(exc)
    return f"Model '{name}' not found"
