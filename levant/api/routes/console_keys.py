"""``/api/console/keys``: list, create (shown once) and revoke the workspace's API keys.

Anyone signed in to the workspace may list keys (prefixes only, never a key);
creating and revoking needs a workspace admin's session. Both are audited by
``levant.access.keys`` with the admin as actor.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter

from levant.access.keys import KeyInfo, KeyNotFound, create_key, get_key, list_keys, revoke_key
from levant.access.sessions import WebIdentity
from levant.api.auth import IdentityDep
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.schemas.console import KeyCreate, key_wire
from levant.db.types import utcnow

router = APIRouter(prefix="/api/console/keys", tags=["console"])


def _require_admin(identity: WebIdentity) -> str:
    """The audit actor for an admin; 403 for members and key sessions."""
    if identity.role != "admin":
        raise APIError(
            403,
            "Only a workspace admin signed in with a password can create or revoke keys",
            type="permission_error",
            code="admin_required",
        )
    return f"user:{identity.principal.key_id}"


def _not_found(key_id: str) -> APIError:
    return APIError(
        404,
        f"Key '{key_id}' not found",
        type="not_found_error",
        param="key_id",
        code="key_not_found",
    )


@router.get("")
async def keys(state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    def query() -> list[KeyInfo]:
        with state.platform.db.reading() as session:
            return list_keys(session, identity.principal.workspace_id)

    rows = await asyncio.to_thread(query)
    rows.sort(key=lambda k: k.created_at, reverse=True)
    return {"object": "list", "data": [key_wire(k) for k in rows]}


@router.post("", status_code=201)
async def create(body: KeyCreate, state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    actor = _require_admin(identity)
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None

    def mint() -> tuple[KeyInfo, str]:
        with state.platform.db.writing() as session:
            created = create_key(
                session,
                state.platform.secret,
                workspace_id=identity.principal.workspace_id,
                name=body.name,
                actor=actor,
                allowed_models=body.allowed_models,
                expires_at=expires,
            )
            return created.info, created.key

    info, key = await asyncio.to_thread(mint)
    # The only time the plaintext leaves the server.
    return {**key_wire(info), "key": key}


@router.delete("/{key_id}")
async def revoke(key_id: str, state: StateDep, identity: IdentityDep) -> dict[str, Any]:
    actor = _require_admin(identity)

    def work() -> KeyInfo:
        with state.platform.db.writing() as session:
            if get_key(session, key_id).workspace_id != identity.principal.workspace_id:
                raise KeyNotFound(key_id)
            return revoke_key(session, key_id, actor=actor)

    try:
        info = await asyncio.to_thread(work)
    except KeyNotFound:
        raise _not_found(key_id) from None
    return key_wire(info)
