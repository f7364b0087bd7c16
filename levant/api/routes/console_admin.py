"""``/api/console/workspaces``: administer workspaces, members, grants and limits.

Thin: authenticate (``IdentityDep``: a Bearer key, or the session cookie with
its CSRF token on writes), turn the identity into an ``admin.Caller``, and call
``levant.access.admin`` / ``policy`` / ``limits.workspace`` inside one
transaction, which also holds the authorisation check. Who may do what is
decided and documented in ``levant.access.admin``; in short: people act through
their membership (admins change, members read), the bootstrap admin key may
change its own workspace's name, residency, grants and limits but never
membership, other keys only read. A workspace the caller may not see is a 404,
never a 403. Limit changes drop this process's cached limits after the commit,
so the next request runs under them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from levant.access import admin
from levant.access.admin import Access, Caller
from levant.access.limits import LimitPolicy
from levant.access.limits.workspace import LimitRow, delete_limit, load_rows, set_limit
from levant.access.policy import grant, revoke_grant, set_residency
from levant.access.sessions import WebIdentity
from levant.api.auth import IdentityDep
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.schemas.console_admin import (
    GrantAdd,
    LimitSet,
    MemberAdd,
    MemberPatch,
    ResidencySet,
    WorkspaceCreate,
    WorkspacePatch,
    deleted_wire,
    grant_wire,
    limit_wire,
    list_wire,
    member_wire,
    workspace_wire,
)
from levant.api.state import AppState
from levant.catalog.card import ModelCard
from levant.catalog.catalog import ModelNotFound
from levant.routing.regions import PolicyError

router = APIRouter(prefix="/api/console/workspaces", tags=["console"])
T = TypeVar("T")


def _caller(state: AppState, identity: WebIdentity) -> Caller:
    p = identity.principal
    if not state.settings.auth:
        return Caller("local", p.key_id, p.workspace_id)
    return Caller("key" if identity.role == "key" else "user", p.key_id, p.workspace_id)


def _api_error(exc: admin.AdminError) -> APIError:
    if isinstance(exc, admin.NotFound):
        status, kind = 404, "not_found_error"
    elif isinstance(exc, admin.Forbidden):
        status, kind = 403, "permission_error"
    elif isinstance(exc, admin.Conflict):
        status, kind = 409, "invalid_request_error"
    else:
        status, kind = 400, "invalid_request_error"
    return APIError(status, exc.message, type=kind, param=exc.param, code=exc.code)


async def _run(state: AppState, fn: Callable[[Session], T], *, write: bool = False) -> T:
    """``fn`` in one transaction (committed only if it returns), refusals as API errors."""

    def work() -> T:
        ctx = state.platform.db.writing() if write else state.platform.db.reading()
        with ctx as session:
            return fn(session)

    try:
        return await asyncio.to_thread(work)
    except admin.AdminError as exc:
        raise _api_error(exc) from None
    except PolicyError as exc:
        raise APIError(400, str(exc), param="allowed_regions", code="invalid_policy") from None


def _catalogue_card(state: AppState, model: str) -> ModelCard:
    try:
        return state.registry.catalog.get(model)
    except ModelNotFound:
        raise admin.Invalid(
            f"Model '{model}' is not in the catalogue", code="model_not_found", param="model"
        ) from None


# --- workspaces ----------------------------------------------------------------------------


@router.get("")
async def list_workspaces(state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    caller = _caller(state, identity)
    rows = await _run(state, lambda s: admin.list_workspaces(s, caller))
    return list_wire([workspace_wire(a) for a in rows])


@router.post("", status_code=201)
async def create_workspace(
    body: WorkspaceCreate, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> Access:
        organisation = admin.require_organisation_admin(s, caller)
        info = admin.create_workspace(
            s,
            organisation,
            body.name,
            actor=caller.actor,
            first_admin=caller.id if caller.kind == "user" else None,
            allowed_regions=body.allowed_regions,
            retention=body.retention,
        )
        return Access(info, "admin")

    return workspace_wire(await _run(state, work, write=True))


@router.get("/{workspace_id}")
async def get_workspace(
    workspace_id: str, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)
    return workspace_wire(await _run(state, lambda s: admin.resolve(s, caller, workspace_id)))


@router.patch("/{workspace_id}")
async def rename_workspace(
    workspace_id: str, body: WorkspacePatch, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> Access:
        access = admin.resolve(s, caller, workspace_id)
        access.require("manage")
        info = admin.rename_workspace(s, workspace_id, body.name, actor=caller.actor)
        return Access(info, access.role)

    return workspace_wire(await _run(state, work, write=True))


@router.put("/{workspace_id}/residency")
async def set_workspace_residency(
    workspace_id: str, body: ResidencySet, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> Access:
        access = admin.resolve(s, caller, workspace_id)
        access.require("manage")
        set_residency(s, workspace_id, body.allowed_regions, body.retention, actor=caller.actor)
        s.flush()
        return Access(admin.get_workspace(s, workspace_id), access.role)

    return workspace_wire(await _run(state, work, write=True))


# --- members -------------------------------------------------------------------------------


@router.get("/{workspace_id}/members")
async def list_members(workspace_id: str, state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> list[admin.MemberInfo]:
        admin.resolve(s, caller, workspace_id).require("read_members")
        return admin.list_members(s, workspace_id)

    return list_wire([member_wire(m) for m in await _run(state, work)])


@router.post("/{workspace_id}/members", status_code=201)
async def add_member(
    workspace_id: str, body: MemberAdd, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> admin.AddedMember:
        admin.resolve(s, caller, workspace_id).require("manage_members")
        return admin.add_member(
            s, workspace_id, body.email, body.role, actor=caller.actor, password=body.password
        )

    added = await _run(state, work, write=True)
    out = {**member_wire(added.member), "created_user": added.created_user}
    if added.initial_password is not None:
        out["password"] = added.initial_password  # generated: the only time it is shown
    return out


@router.patch("/{workspace_id}/members/{user_id}")
async def change_member_role(
    workspace_id: str, user_id: str, body: MemberPatch, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> admin.MemberInfo:
        admin.resolve(s, caller, workspace_id).require("manage_members")
        return admin.set_member_role(s, workspace_id, user_id, body.role, actor=caller.actor)

    return member_wire(await _run(state, work, write=True))


@router.delete("/{workspace_id}/members/{user_id}")
async def remove_member(
    workspace_id: str, user_id: str, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> admin.MemberInfo:
        admin.resolve(s, caller, workspace_id).require("manage_members")
        return admin.remove_member(s, workspace_id, user_id, actor=caller.actor)

    removed = await _run(state, work, write=True)
    return deleted_wire(removed.user_id, "workspace_member")


# --- grants --------------------------------------------------------------------------------


@router.get("/{workspace_id}/grants")
async def list_grants(workspace_id: str, state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> list[admin.GrantInfo]:
        admin.resolve(s, caller, workspace_id).require("read")
        return admin.list_grants(s, workspace_id)

    return list_wire([grant_wire(g) for g in await _run(state, work)])


@router.post("/{workspace_id}/grants", status_code=201)
async def add_grant(
    workspace_id: str, body: GrantAdd, response: Response, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    """201 with the new grant; 200 if the workspace already had it."""
    caller = _caller(state, identity)

    def work(s: Session) -> tuple[bool, admin.GrantInfo]:
        admin.resolve(s, caller, workspace_id).require("manage")
        card = _catalogue_card(state, body.model)
        if card.track != "commercial":
            raise admin.Invalid(
                f"'{card.id}' is an open model: every workspace may use it without a grant",
                code="not_commercial",
                param="model",
            )
        added = grant(s, workspace_id, card.id, actor=caller.actor)
        s.flush()
        found = next(g for g in admin.list_grants(s, workspace_id) if g.model == card.id)
        return added, found

    added, info = await _run(state, work, write=True)
    if not added:
        response.status_code = 200
    return grant_wire(info)


@router.delete("/{workspace_id}/grants/{model:path}")
async def remove_grant(
    workspace_id: str, model: str, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> str:
        admin.resolve(s, caller, workspace_id).require("manage")
        catalog = state.registry.catalog
        model_id = catalog.get(model).id if model in catalog else model
        if not revoke_grant(s, workspace_id, model_id, actor=caller.actor):
            raise admin.NotFound("grant", model, param="model")
        return model_id

    return deleted_wire(await _run(state, work, write=True), "model_grant")


# --- limits --------------------------------------------------------------------------------


def _defaults(state: AppState) -> dict[str, Any] | None:
    s = state.settings
    defaults = {
        "requests_per_second": s.default_requests_per_second,
        "tokens_per_minute": s.default_tokens_per_minute,
        "tokens_per_month": s.default_tokens_per_month,
        "monthly_budget_micros": s.default_monthly_budget_micros,
    }
    return defaults if any(v is not None for v in defaults.values()) else None


@router.get("/{workspace_id}/limits")
async def list_limits(workspace_id: str, state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> list[LimitRow]:
        admin.resolve(s, caller, workspace_id).require("read")
        return load_rows(s, workspace_id)

    rows = await _run(state, work)
    rows.sort(key=lambda r: (r.key_id, r.model))
    return list_wire([limit_wire(r) for r in rows], default_limits=_defaults(state))


@router.put("/{workspace_id}/limits")
async def set_workspace_limit(
    workspace_id: str, body: LimitSet, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    """Create or replace the row for (key_id, model); it applies from the next request."""
    caller = _caller(state, identity)

    def work(s: Session) -> LimitRow:
        admin.resolve(s, caller, workspace_id).require("manage")
        model = body.model if body.model == "*" else _catalogue_card(state, body.model).id
        admin.check_limit_key(s, workspace_id, body.key_id)
        if body.monthly_budget_micros is not None and (body.key_id, model) != ("*", "*"):
            raise admin.Invalid(
                "A monthly budget applies to the whole workspace: key_id and model must be '*'",
                param="monthly_budget_micros",
            )
        policy = LimitPolicy(
            body.requests_per_second, body.tokens_per_minute, body.tokens_per_month
        )
        set_limit(
            s,
            workspace_id,
            actor=caller.actor,
            key_id=body.key_id,
            model=model,
            policy=policy,
            monthly_budget_micros=body.monthly_budget_micros,
        )
        return LimitRow(body.key_id, model, policy, body.monthly_budget_micros)

    row = await _run(state, work, write=True)
    state.limits.workspace.invalidate(workspace_id)  # committed: the next request sees it
    return limit_wire(row)


@router.delete("/{workspace_id}/limits")
async def remove_workspace_limit(
    workspace_id: str,
    state: StateDep,
    identity: IdentityDep,
    key_id: Annotated[str, Query(min_length=1, max_length=32)] = "*",
    model: Annotated[str, Query(min_length=1, max_length=200)] = "*",
) -> dict[str, Any]:
    caller = _caller(state, identity)

    def work(s: Session) -> str:
        admin.resolve(s, caller, workspace_id).require("manage")
        catalog = state.registry.catalog
        model_id = catalog.get(model).id if model != "*" and model in catalog else model
        if not delete_limit(s, workspace_id, actor=caller.actor, key_id=key_id, model=model_id):
            raise admin.NotFound("limit", f"{key_id}/{model}")
        return model_id

    model_id = await _run(state, work, write=True)
    state.limits.workspace.invalidate(workspace_id)
    return {"object": "limit", "key_id": key_id, "model": model_id, "deleted": True}
