"""Catalogue policy: which models a workspace may see and use, and which may leave as weights.

Open-track models are usable by every workspace and exportable. Commercial-track
models are usable only with a grant, invisible without one, and never exportable
by any route or command.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from levant.access import audit
from levant.catalog.card import ModelCard
from levant.db.tables import ModelGrant


class NotExportable(PermissionError):
    """A commercial model's weights were asked for."""


def check_exportable(card: ModelCard) -> None:
    if card.track != "open":
        raise NotExportable(
            f"Model '{card.id}' is on the commercial track: it is served through the API "
            "only and its weights are never exported"
        )


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
