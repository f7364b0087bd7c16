"""Resolve a requested model name to a loaded service, mapping misses to API errors."""

from __future__ import annotations

from levant.access.principal import Principal
from levant.api.errors import APIError
from levant.api.state import AppState
from levant.catalog.card import ModelCard
from levant.catalog.catalog import ModelNotFound
from levant.embeddings import EmbeddingService
from levant.serving.registry import ModelNotAvailable, OutOfModelMemory, Service
from levant.serving.service import ModelService


async def service_for(
    state: AppState, name: str, principal: Principal, *, capability: str = "completion_chat"
) -> ModelService:
    """The loaded generative service for ``name``: 404 if unknown or not pulled, 403 out
    of scope, 400 when the model lacks ``capability`` (a card field, e.g. completion_fim)."""
    card = card_for(state, name, principal)
    if card.embedding is not None or not getattr(card.capabilities, capability, False):
        raise APIError(
            400,
            f"Model '{name}' does not support this endpoint (capability: {capability})",
            param="model",
            code="unsupported_capability",
        )
    service = await _loaded(state, card)
    assert isinstance(service, ModelService)
    return service


async def embedder_for(state: AppState, name: str, principal: Principal) -> EmbeddingService:
    """The loaded embedding service for ``name``; 400 for a model that does not embed."""
    card = card_for(state, name, principal)
    if card.embedding is None:
        raise APIError(
            400,
            f"Model '{name}' is not an embedding model (capability: embeddings)",
            param="model",
            code="unsupported_capability",
        )
    service = await _loaded(state, card)
    assert isinstance(service, EmbeddingService)
    return service


async def _loaded(state: AppState, card: ModelCard) -> Service:
    try:
        return await state.registry.get(card.id)
    except OutOfModelMemory as exc:
        raise APIError(
            503,
            str(exc),
            type="service_unavailable",
            code="capacity_exceeded",
            headers={"Retry-After": "10"},
        ) from exc


def card_for(
    state: AppState, name: str, principal: Principal, *, require_pulled: bool = True
) -> ModelCard:
    """The servable card for ``name``: 404 if unknown, not pulled (when ``require_pulled``:
    no other deployment could serve it) or not granted; 403 when the key's scopes exclude it."""
    try:
        card = state.registry.resolve(name) if require_pulled else state.registry.catalog.get(name)
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
    return card


def _missing(name: str, exc: Exception) -> str:
    if isinstance(exc, ModelNotAvailable):
        return str(exc)
    return f"Model '{name}' not found"
