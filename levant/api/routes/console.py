"""``/api/console/catalogue`` and ``/api/console/policy``: what the console shows besides keys.

The catalogue is ``/v1/models`` plus what a person choosing a model wants to
see (region, price, where the open weights download from). The policy page is
the workspace's residency and retention, its grants and its stored limits.
Usage needs no console route: the console reads the public ``/v1/usage``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from levant.access.limits.workspace import LimitRow, load_rows
from levant.access.policy import workspace_grants
from levant.api.auth import IdentityDep
from levant.api.deps import StateDep
from levant.api.schemas.models import model_card_wire
from levant.api.state import AppState
from levant.catalog.card import ModelCard
from levant.db.tables import Workspace

router = APIRouter(prefix="/api/console", tags=["console"])


def _regions(state: AppState, card: ModelCard) -> list[str]:
    """Regions of the deployments that serve ``card`` (local engine and upstreams)."""
    found = [d.region for d in state.gateway.router.deployments if d.model == card.id]
    return list(dict.fromkeys(found))


def _catalogue_entry(state: AppState, card: ModelCard) -> dict[str, Any]:
    pricing = card.pricing
    return {
        **model_card_wire(card),
        "regions": _regions(state, card),
        "loaded": any(s.card.id == card.id for s in state.registry.loaded()),
        "pricing": None
        if pricing is None
        else {
            "input_per_million": str(pricing.input_per_million),
            "output_per_million": str(pricing.output_per_million),
            "currency": pricing.currency,
        },
        "weights_url": f"/v1/models/{card.id}/weights" if card.track == "open" else None,
        "files": [{"path": f.path, "size": f.size} for f in card.files]
        if card.track == "open"
        else [],
    }


@router.get("/catalogue")
async def catalogue(state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    cards = [c for c in state.registry.servable_cards() if identity.principal.may_use(c)]
    return {"object": "list", "data": [_catalogue_entry(state, c) for c in cards]}


def _limit_wire(row: LimitRow) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "model": row.model,
        "requests_per_second": row.policy.requests_per_second,
        "tokens_per_minute": row.policy.tokens_per_minute,
        "tokens_per_month": row.policy.tokens_per_month,
        "monthly_budget_micros": row.monthly_budget_micros,
    }


@router.get("/policy")
async def policy(state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    workspace_id = identity.principal.workspace_id

    def query() -> tuple[Workspace | None, list[LimitRow], frozenset[str]]:
        with state.platform.db.reading() as session:
            return (
                session.get(Workspace, workspace_id),
                load_rows(session, workspace_id),
                workspace_grants(session, workspace_id),
            )

    workspace, rows, grants = await asyncio.to_thread(query)
    s = state.settings
    defaults = {
        "requests_per_second": s.default_requests_per_second,
        "tokens_per_minute": s.default_tokens_per_minute,
        "tokens_per_month": s.default_tokens_per_month,
        "monthly_budget_micros": s.default_monthly_budget_micros,
    }
    return {
        "object": "policy",
        "workspace": {
            "id": workspace_id,
            "name": identity.workspace_name,
            "retention": workspace.retention if workspace else identity.retention,
            "allowed_regions": workspace.allowed_regions if workspace else None,
        },
        "gateway_region": state.gateway.region,
        "residency": identity.principal.residency.describe(),
        "deployments": state.gateway.snapshot()["deployments"],
        "grants": sorted(grants),
        "limits": [_limit_wire(r) for r in rows],
        "default_limits": defaults if any(v is not None for v in defaults.values()) else None,
    }
