"""``/api/conversations``: the chat app's history, one row per message, per signed-in owner.

Storage only: generation goes through the public ``POST /v1/chat/completions``;
the app saves the user's message and the finished reply here. A zero-retention
workspace stores nothing: every write is refused with ``zero_retention``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from levant import conversations as store
from levant.access.sessions import WebIdentity
from levant.api.auth import IdentityDep
from levant.api.deps import StateDep
from levant.api.errors import APIError
from levant.api.schemas.console import (
    ConversationCreate,
    ConversationPatch,
    MessageCreate,
    conversation_wire,
    message_wire,
)
from levant.api.state import AppState

router = APIRouter(prefix="/api/conversations", tags=["conversations"])
T = TypeVar("T")


def _refuse_if_zero(identity: WebIdentity) -> None:
    if identity.retention == "zero":
        raise APIError(
            403,
            "This workspace has zero retention: conversations are never stored",
            type="permission_error",
            code="zero_retention",
        )


async def _run(state: AppState, fn: Callable[[Session], T], *, write: bool = False) -> T:
    def work() -> T:
        ctx = state.platform.db.writing() if write else state.platform.db.reading()
        with ctx as session:
            return fn(session)

    try:
        return await asyncio.to_thread(work)
    except store.ConversationNotFound as exc:
        raise APIError(
            404,
            f"Conversation '{exc.args[0]}' not found",
            type="not_found_error",
            param="conversation_id",
            code="conversation_not_found",
        ) from None


def _owner(identity: WebIdentity) -> dict[str, str]:
    p = identity.principal
    return {"workspace_id": p.workspace_id, "owner": p.key_id}


@router.get("")
async def list_conversations(
    state: StateDep,
    identity: IdentityDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    rows = await _run(
        state, lambda s: store.list_conversations(s, query=q, limit=limit, **_owner(identity))
    )
    return {
        "object": "list",
        "retention": identity.retention,
        "data": [conversation_wire(c) for c in rows],
    }


@router.post("", status_code=201)
async def create_conversation(
    body: ConversationCreate, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    _refuse_if_zero(identity)
    args = body.completion_args
    conv = await _run(
        state,
        lambda s: store.create_conversation(
            s,
            name=body.name,
            model=body.model,
            instructions=body.instructions,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            **_owner(identity),
        ),
        write=True,
    )
    return conversation_wire(conv, with_messages=True)


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: str, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    conv = await _run(
        state, lambda s: store.get_conversation(s, conversation_id, **_owner(identity))
    )
    return conversation_wire(conv, with_messages=True)


@router.patch("/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: ConversationPatch, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    _refuse_if_zero(identity)
    args = body.completion_args
    clear: set[str] = set()
    if "instructions" in body.model_fields_set and body.instructions is None:
        clear.add("instructions")
    if args is not None:
        clear |= {n for n in ("temperature", "max_tokens") if getattr(args, n) is None}
    change = store.ConversationUpdate(
        name=body.name,
        model=body.model,
        instructions=body.instructions,
        temperature=args.temperature if args else None,
        max_tokens=args.max_tokens if args else None,
        clear=frozenset(clear),
    )
    conv = await _run(
        state,
        lambda s: store.update_conversation(s, conversation_id, change, **_owner(identity)),
        write=True,
    )
    return conversation_wire(conv)


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, state: StateDep, identity: IdentityDep
) -> Response:
    await _run(
        state,
        lambda s: store.delete_conversation(s, conversation_id, **_owner(identity)),
        write=True,
    )
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", status_code=201)
async def append_message(
    conversation_id: str, body: MessageCreate, state: StateDep, identity: IdentityDep
) -> dict[str, Any]:
    _refuse_if_zero(identity)
    msg = await _run(
        state,
        lambda s: store.append_message(
            s,
            conversation_id,
            role=body.role,
            content=body.content,
            model=body.model,
            finish_reason=body.finish_reason,
            **_owner(identity),
        ),
        write=True,
    )
    return message_wire(msg)


@router.delete("/{conversation_id}/messages")
async def truncate_messages(
    conversation_id: str,
    state: StateDep,
    identity: IdentityDep,
    from_seq: Annotated[int, Query(ge=0)],
) -> dict[str, Any]:
    """Delete message ``from_seq`` and all after it: the app's edit-and-resend and regenerate."""
    deleted = await _run(
        state,
        lambda s: store.truncate_messages(s, conversation_id, from_seq, **_owner(identity)),
        write=True,
    )
    return {"object": "conversation.truncated", "id": conversation_id, "deleted": deleted}


@router.get("/{conversation_id}/export", response_model=None)
async def export_conversation(
    conversation_id: str,
    state: StateDep,
    identity: IdentityDep,
    format: Annotated[Literal["markdown", "json"], Query()] = "markdown",
) -> Response:
    conv = await _run(
        state, lambda s: store.get_conversation(s, conversation_id, **_owner(identity))
    )
    if format == "json":
        body = json.dumps(store.to_json(conv), ensure_ascii=False, indent=2)
        media, ext = "application/json", "json"
    else:
        body, media, ext = store.to_markdown(conv), "text/markdown; charset=utf-8", "md"
    return Response(
        body,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{conv.id}.{ext}"'},
    )
