"""Wire formats of the console's admin API (``/api/console/workspaces/...``).

Request bodies are strict (an unknown field is a 422, as everywhere else);
responses are built by the ``*_wire`` functions. Lists follow Mistral's
``{"object": "list", "data": [...]}``; deletions answer like Mistral's
``DeleteModelOut``: ``{"id", "object", "deleted": true}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from levant.access.admin import Access, GrantInfo, MemberInfo, WorkspaceInfo
from levant.access.limits.workspace import LimitRow
from levant.routing.regions import PolicyError, ResidencyPolicy

Retention = Literal["standard", "zero"]
Role = Literal["admin", "member"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkspaceCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    allowed_regions: list[str] | None = Field(default=None, max_length=100)
    """Region and/or jurisdiction names; null (the default) allows any region."""
    retention: Retention = "standard"


class WorkspacePatch(_Strict):
    name: str = Field(min_length=1, max_length=200)


class ResidencySet(_Strict):
    """Both fields are required: a policy is replaced whole, never half-guessed."""

    allowed_regions: list[str] | None = Field(max_length=100)
    retention: Retention


class MemberAdd(_Strict):
    email: str = Field(min_length=3, max_length=320)
    role: Role = "member"
    password: str | None = Field(default=None, min_length=12, max_length=1000)
    """Only for a new user; without one a password is generated and returned once."""


class MemberPatch(_Strict):
    role: Role


class GrantAdd(_Strict):
    model: str = Field(min_length=1, max_length=200)


class LimitSet(_Strict):
    """One stored limit row; fields left out (or null) mean unlimited."""

    key_id: str = Field(default="*", min_length=1, max_length=32)
    model: str = Field(default="*", min_length=1, max_length=200)
    requests_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_month: int | None = Field(default=None, gt=0)
    monthly_budget_micros: int | None = Field(default=None, ge=0)
    """Only on the workspace-wide row (key_id and model both ``*``)."""


def _iso(value: datetime) -> str:
    return value.isoformat()


def _describe(ws: WorkspaceInfo) -> str:
    try:
        return ResidencyPolicy.from_workspace(ws.allowed_regions, ws.retention).describe()
    except PolicyError:
        return "stored policy does not parse: nothing is allowed"


def workspace_wire(access: Access) -> dict[str, Any]:
    ws = access.workspace
    return {
        "object": "workspace",
        "id": ws.id,
        "name": ws.name,
        "organisation_id": ws.organisation_id,
        "allowed_regions": ws.allowed_regions,
        "retention": ws.retention,
        "residency": _describe(ws),
        "role": access.role,
        "created_at": _iso(ws.created_at),
    }


def member_wire(m: MemberInfo) -> dict[str, Any]:
    return {
        "object": "workspace_member",
        "user_id": m.user_id,
        "email": m.email,
        "role": m.role,
        "workspace_id": m.workspace_id,
        "created_at": _iso(m.created_at),
    }


def grant_wire(g: GrantInfo) -> dict[str, Any]:
    return {
        "object": "model_grant",
        "model": g.model,
        "workspace_id": g.workspace_id,
        "granted_at": _iso(g.granted_at),
    }


def limit_wire(row: LimitRow) -> dict[str, Any]:
    return {
        "object": "limit",
        "key_id": row.key_id,
        "model": row.model,
        "requests_per_second": row.policy.requests_per_second,
        "tokens_per_minute": row.policy.tokens_per_minute,
        "tokens_per_month": row.policy.tokens_per_month,
        "monthly_budget_micros": row.monthly_budget_micros,
    }


def deleted_wire(ident: str, kind: str) -> dict[str, Any]:
    return {"id": ident, "object": kind, "deleted": True}


def list_wire(data: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": data, **extra}
