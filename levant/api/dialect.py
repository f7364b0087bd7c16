"""Which wire dialect a caller speaks: Mistral's (the default) or OpenAI's.

Both dialects share one route; the dialect only picks the error shape and
how finish reasons the other side does not know are spelled.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request

Dialect = Literal["mistral", "openai"]


def detect_dialect(request: Request) -> Dialect:
    cached = getattr(request.state, "dialect", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    agent = request.headers.get("user-agent", "")
    return "openai" if agent.startswith("OpenAI/") else "mistral"
