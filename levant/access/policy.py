"""Catalogue and residency policy: which models a workspace may see and use, which may
leave as weights, and where its requests may be served.

Open-track models are usable by every workspace and exportable. Commercial-track
models are usable only with a grant, invisible without one, and never exportable
by any route or command.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from levant.access import audit
from levant.catalog.card import ModelCard
from levant.db.tables import ModelGrant, Workspace
from levant.routing.regions import DEFAULT_REGIONS, PolicyError, RegionRegistry, ResidencyPolicy


class NotExportable(PermissionError):
    """A commercial model's weights were asked for."""


def check_exportable(card: ModelCard) -> None:
    if card.track != "open":
        raise NotExportable(
            f"Model '{card.id}' is on the commercial track: it is served through the API "
            "only and its weights are never exported"
        )


def workspace_residency(
    session: Session, workspace_id: str, regions: RegionRegistry = DEFAULT_REGIONS
) -> ResidencyPolicy:
    """The workspace's residency policy (allowed regions/jurisdictions, retention).

    A stored policy that no longer parses allows nothing: a request fails with a
    message naming the policy rather than being served somewhere it may not be.
    """
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        return ResidencyPolicy(frozenset(), frozenset(), "zero", regions)
    try:
        return ResidencyPolicy.from_workspace(ws.allowed_regions, ws.retention, regions)
    except PolicyError:
        return ResidencyPolicy(frozenset(), frozenset(), "zero", regions)


def workspace_grants(session: Session, workspace_id: str) -> frozenset[str]:
    rows = session.scalars(
        select(ModelGrant.model_id).where(ModelGrant.workspace_id == workspace_id)
    )
    return frozenset(rows)


def grant(session: Session, workspace_id: str, model_id: str, *, actor: str) -> bool:
    """Grant a commercial model to a workspace; False if it already had it. Audited."""
    if session.get(ModelGrant, (workspace_id, model_id)) is not None:
        return False
    session.add(ModelGrant(workspace_id=workspace_id, model_id=model_id))
    audit.append(
        session,
        action="grant.added",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={"model": model_id},
    )
    return True


def revoke_grant(session: Session, workspace_id: str, model_id: str, *, actor: str) -> bool:
    row = session.get(ModelGrant, (workspace_id, model_id))
    if row is None:
        return False
    session.delete(row)
    audit.append(
        session,
        action="grant.removed",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={"model": model_id},
    )
    return True


def set_residency(
    session: Session,
    workspace_id: str,
    allowed_regions: list[str] | None,
    retention: str,
    *,
    actor: str,
) -> ResidencyPolicy:
    """Store a workspace's residency policy after checking it parses. Audited.

    ``allowed_regions``: region and/or jurisdiction names; ``None`` allows any region.
    Raises PolicyError (nothing written) for a name or mode that does not parse.
    """
    policy = ResidencyPolicy.from_workspace(allowed_regions, retention)
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        raise LookupError(f"no workspace {workspace_id!r}")
    ws.allowed_regions = None if allowed_regions is None else list(allowed_regions)
    ws.retention = retention
    audit.append(
        session,
        action="workspace.residency",
        actor=actor,
        target=workspace_id,
        details={"allowed_regions": ws.allowed_regions, "retention": retention},
    )
    return policy
