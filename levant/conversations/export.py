"""A conversation as a file: Markdown for people, JSON for programs."""

from __future__ import annotations

from typing import Any

from levant.conversations.store import ConversationInfo

_ROLE_TITLES = {"user": "User", "assistant": "Assistant"}


def to_json(conv: ConversationInfo) -> dict[str, Any]:
    return {
        "object": "conversation",
        "id": conv.id,
        "name": conv.name,
        "model": conv.model,
        "instructions": conv.instructions,
        "completion_args": {"temperature": conv.temperature, "max_tokens": conv.max_tokens},
        "created_at": conv.created_at.isoformat(),
        "updated_at": conv.updated_at.isoformat(),
        "messages": [
            {
                "seq": m.seq,
                "role": m.role,
                "content": m.content,
                "model": m.model,
                "finish_reason": m.finish_reason,
                "created_at": m.created_at.isoformat(),
            }
            for m in conv.messages
        ],
    }


def to_markdown(conv: ConversationInfo) -> str:
    lines = [f"# {conv.name}", "", f"- model: `{conv.model}`"]
    lines.append(f"- created: {conv.created_at.isoformat(timespec='seconds')}")
    if conv.temperature is not None:
        lines.append(f"- temperature: {conv.temperature}")
    if conv.max_tokens is not None:
        lines.append(f"- max tokens: {conv.max_tokens}")
    if conv.instructions:
        lines += ["", "## System prompt", "", conv.instructions]
    for m in conv.messages:
        title = _ROLE_TITLES.get(m.role, m.role)
        if m.role == "assistant" and m.model:
            title += f" ({m.model})"
        lines += ["", f"## {title}", "", m.content]
    return "\n".join(lines) + "\n"
