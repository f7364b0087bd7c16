"""Named FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from levant.api.state import AppState


async def get_state(request: Request) -> AppState:
    """Async on purpose: FastAPI runs a sync dependency in a worker thread (a thread hop
    per request for a dictionary lookup)."""
    state: AppState = request.app.state.levant
    return state


StateDep = Annotated[AppState, Depends(get_state)]
