"""Who is calling: ``Authorization: Bearer lv-…`` → ``Principal``, or a 401 in the caller's dialect.

Policy checks that need the principal (model scopes, endpoint scopes) live in
``levant.access``; this module only extracts and authenticates the key.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request

from levant.access.keys import KeyRejected, authenticate
from levant.access.policy import workspace_grants
from levant.access.principal import Principal, Scopes
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.state import AppState

_REASONS = {
    "malformed": "Malformed API key",
    "unknown": "Invalid API key",
    "revoked": "API key has been revoked",
    "expired": "API key has expired",
}


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(
        401, message, type="authentication_error", code=code, headers={"www-authenticate": "Bearer"}
    )


def _authenticate_sync(state: AppState, key: str | None) -> Principal:
    """The key's principal with its workspace's grants, in one transaction."""
    with state.platform.db.writing() as session:
        if key is None:  # LEVANT_AUTH=0: everything runs as the default workspace
            workspace = state.platform.bootstrap.workspace_id
            principal = Principal(workspace_id=workspace, key_id="anonymous", scopes=Scopes())
        else:
            principal = authenticate(session, key, state.platform.secret)
        grants = workspace_grants(session, principal.workspace_id)
    return replace(principal, grants=grants)


async def current_principal(request: Request, state: StateDep) -> Principal:
    if not state.settings.auth:
        return await asyncio.to_thread(_authenticate_sync, state, None)
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>'", "missing_api_key"
        )
    try:
        principal = await asyncio.to_thread(_authenticate_sync, state, key.strip())
    except KeyRejected as exc:
        raise _unauthorized(
            _REASONS.get(exc.reason, "Invalid API key"), f"{exc.reason}_api_key"
        ) from None
    endpoint = request.url.path
    if not principal.scopes.allows_endpoint(endpoint):
        raise APIError(
            403,
            f"This API key may not call {endpoint}",
            type="permission_error",
            code="endpoint_not_allowed",
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
