"""Named FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from levant.api.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.levant
    return state


StateDep = Annotated[AppState, Depends(get_state)]
