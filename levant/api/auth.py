"""Who is calling: ``Authorization: Bearer lv-…`` → ``Principal``, or a 401 in the caller's dialect.

A browser signed in to the chat app sends the ``levant_session`` cookie instead
(only when there is no Authorization header: a Bearer key always wins, with its
behaviour unchanged). A cookie-authenticated request that changes state must
carry the session's CSRF token in ``X-CSRF-Token``.

Policy checks that need the principal (model scopes, endpoint scopes) live in
``levant.access``; this module only extracts and authenticates the credentials.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request

from levant.access import principal_cache, sessions
from levant.access.keys import KeyRejected, authenticate_digest, hash_key, well_formed
from levant.access.policy import workspace_grants, workspace_residency
from levant.access.principal import Principal, Scopes
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.state import AppState

SESSION_COOKIE = "levant_session"
CSRF_COOKIE = "levant_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INTERNAL_PRINCIPAL = "levant.principal"
"""ASGI scope key under which an in-process caller (the batch runner, calling the app
through ``httpx.ASGITransport``) hands over the principal it acts for. Only code in
this process can set scope keys: a request from the network never carries it."""

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


ANONYMOUS = ""
"""The principal cache's key for LEVANT_AUTH=0 (no digest is empty)."""


def _authenticate_sync(state: AppState, digest: str | None) -> Principal:
    """The key's principal with its workspace's grants, in one transaction; cached."""
    read_gen = principal_cache.generation()
    expires_at = None
    with state.platform.db.writing() as session:
        if digest is None:  # LEVANT_AUTH=0: everything runs as the default workspace
            workspace = state.platform.bootstrap.workspace_id
            principal = Principal(workspace_id=workspace, key_id="anonymous", scopes=Scopes())
        else:
            principal, expires_at = authenticate_digest(session, digest)
        grants = workspace_grants(session, principal.workspace_id)
        residency = workspace_residency(session, principal.workspace_id, state.gateway.regions)
    principal = replace(principal, grants=grants, residency=residency)
    state.principals.put(ANONYMOUS if digest is None else digest, principal, expires_at, read_gen)
    return principal


async def _key_principal(state: AppState, digest: str | None) -> Principal:
    """From the cache when it holds the key (no thread hop, no database), else read."""
    cached = state.principals.get(ANONYMOUS if digest is None else digest)
    if cached is not None:
        return cached
    return await asyncio.to_thread(_authenticate_sync, state, digest)


def _session_sync(state: AppState, token: str) -> sessions.WebIdentity:
    with state.platform.db.reading() as session:
        identity = sessions.resolve(session, state.platform.secret, token)
        wid = identity.principal.workspace_id
        grants = workspace_grants(session, wid)
        residency = workspace_residency(session, wid, state.gateway.regions)
    return replace(
        identity, principal=replace(identity.principal, grants=grants, residency=residency)
    )


async def _session_principal(request: Request, state: AppState, token: str) -> Principal:
    try:
        identity = await asyncio.to_thread(_session_sync, state, token)
    except sessions.SessionInvalid:
        raise APIError(
            401,
            "Session expired or signed out: sign in again",
            type="authentication_error",
            code="invalid_session",
        ) from None
    if request.method not in SAFE_METHODS and not sessions.check_csrf(
        token, request.headers.get(CSRF_HEADER), state.platform.secret
    ):
        raise APIError(
            403,
            f"Missing or wrong CSRF token: send the {CSRF_COOKIE} cookie's value as X-CSRF-Token",
            type="permission_error",
            code="csrf_failed",
        )
    request.state.web_identity = identity
    return identity.principal


async def current_principal(request: Request, state: StateDep) -> Principal:
    internal = request.scope.get(INTERNAL_PRINCIPAL)
    if not state.settings.auth and internal is None:
        return await _key_principal(state, None)
    header = request.headers.get("authorization", "")
    session_token = request.cookies.get(SESSION_COOKIE)
    if isinstance(internal, Principal):
        principal = internal  # authenticated by the in-process caller (batch lines)
    elif not header and session_token:
        principal = await _session_principal(request, state, session_token)
    else:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _unauthorized(
                "Missing API key: send 'Authorization: Bearer <key>'", "missing_api_key"
            )
        key = key.strip()
        try:
            if not well_formed(key):
                raise KeyRejected("malformed")
            principal = await _key_principal(state, hash_key(key, state.platform.secret))
        except KeyRejected as exc:
            raise _unauthorized(
                _REASONS.get(exc.reason, "Invalid API key"), f"{exc.reason}_api_key"
            ) from None
    endpoint = _path(request)
    if not principal.scopes.allows_endpoint(endpoint):
        raise APIError(
            403,
            f"This API key may not call {endpoint}",
            type="permission_error",
            code="endpoint_not_allowed",
        )
    return principal


def _path(request: Request) -> str:
    """``request.url.path`` without building the whole URL (host parsing included) when
    the raw path has nothing the URL would escape."""
    path: str = request.scope["path"]
    if "?" in path or "#" in path or "\\" in path:
        return request.url.path
    return path


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _identity_sync(state: AppState, principal: Principal) -> sessions.WebIdentity:
    role: sessions.Role = "key" if state.settings.auth else "admin"
    display = f"key {principal.key_id}" if state.settings.auth else "local user (auth off)"
    with state.platform.db.reading() as session:
        return sessions.identity_for(session, principal, role, display)


async def current_identity(
    request: Request, state: StateDep, principal: PrincipalDep
) -> sessions.WebIdentity:
    """The caller as the console sees it: role and workspace as well as the principal."""
    identity: sessions.WebIdentity | None = getattr(request.state, "web_identity", None)
    if identity is not None:
        return identity
    return await asyncio.to_thread(_identity_sync, state, principal)


IdentityDep = Annotated[sessions.WebIdentity, Depends(current_identity)]
