"""``GET /v1/models`` bodies: Mistral's model card fields plus Levant's track and licence."""

from __future__ import annotations

from typing import Any

from levant.catalog.card import ModelCard


def model_card_wire(card: ModelCard) -> dict[str, Any]:
    return {
        "id": card.id,
        "object": "model",
        "created": card.created,
        "owned_by": card.owned_by,
        "name": card.name,
        "description": card.description,
        "max_context_length": card.max_context_length,
        "aliases": list(card.aliases),
        "deprecation": None,
        "deprecation_replacement_model": None,
        "default_model_temperature": card.default_model_temperature,
        "type": card.type,
        "capabilities": card.capabilities.model_dump(),
        "track": card.track,
        "licence": card.licence,
        "licence_url": card.licence_url,
    }


def model_list_wire(cards: list[ModelCard]) -> dict[str, Any]:
    return {"object": "list", "data": [model_card_wire(c) for c in cards]}
