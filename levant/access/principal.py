"""Principal: who is calling, as the API layer and policy see it after key authentication.

A small frozen value; it carries ids and scopes, never the key itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from levant.routing.regions import UNRESTRICTED, ResidencyPolicy

if TYPE_CHECKING:
    from levant.catalog.card import ModelCard


@dataclass(frozen=True, slots=True)
class Scopes:
    """What a key may reach. ``None`` means no restriction."""

    models: frozenset[str] | None = None
    endpoints: frozenset[str] | None = None
    """Endpoint names as the API layer spells them (e.g. ``/v1/chat/completions``)."""

    @classmethod
    def of(
        cls, models: Iterable[str] | None = None, endpoints: Iterable[str] | None = None
    ) -> Scopes:
        return cls(
            None if models is None else frozenset(models),
            None if endpoints is None else frozenset(endpoints),
        )

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def allows_endpoint(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints


@dataclass(frozen=True, slots=True)
class Principal:
    workspace_id: str
    key_id: str
    scopes: Scopes
    grants: frozenset[str] = frozenset()
    """Commercial-track models this principal's workspace may use."""
    residency: ResidencyPolicy = UNRESTRICTED
    """Where the workspace's requests may be served, and its retention mode."""

    @property
    def zero_retention(self) -> bool:
        return self.residency.retention == "zero"

    def may_use(self, card: ModelCard) -> bool:
        """Visible and usable: in the key's scope, and open or granted."""
        return self.scopes.allows_model(card.id) and (
            card.track == "open" or card.id in self.grants
        )
