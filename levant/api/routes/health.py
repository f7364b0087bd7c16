"""``GET /health``: 503 while the default model loads (or failed to), 200 once ready."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from levant.api.deps import StateDep

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    if state.load_error is not None:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
    if not state.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    models = [s.card.id for s in state.registry.loaded()]
    return JSONResponse({"status": "ok", "models": models})
