"""Serve the app's pages with a strict Content-Security-Policy, and its assets under /static.

The CSP is the second wall against injected markup (the first is that model and
user text only ever reach the DOM as text): no inline script, no foreign origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/")
async def chat_page() -> FileResponse:
    return _page("index.html")


@router.get("/console")
async def console_page() -> FileResponse:
    return _page("console.html")


class _Assets(StaticFiles):
    """Static files that revalidate (no stale app after an upgrade) and never sniff types."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = "no-cache"
        response.headers["x-content-type-options"] = "nosniff"
        return response


def mount_web(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", _Assets(directory=STATIC_DIR), name="static")
