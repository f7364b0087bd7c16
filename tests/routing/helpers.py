"""Builders shared by the routing tests."""

from __future__ import annotations

import json
from typing import Any

from levant.routing import Deployment, UpstreamConfig
from levant.routing.deployment import Backend


def dep(
    name: str,
    region: str,
    *,
    model: str = "m",
    backend: Backend = "upstream",
    weight: int = 1,
    url: str = "http://upstream.test",
    **upstream: Any,
) -> Deployment:
    up = UpstreamConfig(url=url, **upstream) if backend == "upstream" else None  # type: ignore[arg-type]
    return Deployment(
        name=name, model=model, region=region, backend=backend, upstream=up, weight=weight
    )


def completion(
    content: str = "Bonjour", prompt: int = 5, completion_tokens: int = 2
) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def delta(text: str, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    chunk: dict[str, Any] = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return sse(chunk)


def full_stream(words: list[str], prompt: int = 5) -> list[bytes]:
    usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": 0}
    return [
        *(delta(w) for w in words),
        delta("", "stop", usage),
        b"data: [DONE]\n\n",
    ]


BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
