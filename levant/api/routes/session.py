"""``/auth/login``, ``/auth/logout``, ``/auth/me``: browser sessions for the chat app and console.

The session token travels only in the ``levant_session`` cookie (HttpOnly,
SameSite=Lax, Secure over https); ``levant_csrf`` is readable by the page, which
echoes it as ``X-CSRF-Token`` on every state-changing call.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from levant.access import sessions
from levant.api.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    IdentityDep,
)
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.schemas.console import LoginRequest, identity_wire
from levant.api.state import AppState

router = APIRouter(prefix="/auth", tags=["session"])


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on POST; a foreign one is a cross-site (login CSRF) attempt."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", request.url.netloc)


def _set_cookies(
    request: Request, response: Response, created: sessions.NewSession, secret: bytes
) -> None:
    secure = request.url.scheme == "https"
    max_age = int(sessions.SESSION_LIFETIME.total_seconds())
    common: dict[str, Any] = {"max_age": max_age, "secure": secure, "samesite": "lax", "path": "/"}
    response.set_cookie(SESSION_COOKIE, created.token, httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, sessions.csrf_token(created.token, secret), **common)


def _clear_cookies(response: Response) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/")


def _sign_in(state: AppState, body: LoginRequest) -> sessions.NewSession:
    secret = state.platform.secret
    with state.platform.db.writing() as session:
        if body.api_key:
            return sessions.sign_in_key(session, secret, body.api_key)
        assert body.email is not None and body.password is not None
        return sessions.sign_in_password(session, secret, body.email, body.password, body.workspace)


@router.post("/login")
async def login(
    body: LoginRequest, request: Request, response: Response, state: StateDep
) -> dict[str, Any]:
    if not _same_origin(request):
        raise APIError(
            403, "Cross-site sign-in refused", type="permission_error", code="bad_origin"
        )
    try:
        created = await asyncio.to_thread(_sign_in, state, body)
    except sessions.SignInFailed:
        raise APIError(
            401,
            "Wrong email or password" if not body.api_key else "API key not accepted",
            type="authentication_error",
            code="sign_in_failed",
        ) from None
    _set_cookies(request, response, created, state.platform.secret)
    return {
        **identity_wire(created.identity),
        "csrf_token": sessions.csrf_token(created.token, state.platform.secret),
    }


@router.post("/logout", status_code=204)
async def logout(request: Request, state: StateDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        secret = state.platform.secret
        if not sessions.check_csrf(token, request.headers.get(CSRF_HEADER), secret):
            raise APIError(
                403, "Missing or wrong CSRF token", type="permission_error", code="csrf_failed"
            )

        def forget() -> None:
            with state.platform.db.writing() as session:
                sessions.sign_out(session, secret, token)

        await asyncio.to_thread(forget)
    out = Response(status_code=204)
    _clear_cookies(out)
    return out


@router.get("/me")
async def me(identity: IdentityDep) -> dict[str, Any]:
    return identity_wire(identity)
