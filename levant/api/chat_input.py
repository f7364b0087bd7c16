"""Wire chat messages -> internal ``ChatMessage`` list, with Mistral's serving rules;
response format and tools -> ``OutputSpec``.

Everything a model cannot honour is refused here with a 400 that names the
capability, before any token is generated.
"""

from __future__ import annotations

import json
import re
from typing import Any

from levant.api.errors import APIError
from levant.api.schemas.chat import ChatCompletionRequest, Message
from levant.catalog.card import ModelCard
from levant.models.tokenizers.protocol import ChatMessage, ToolCall
from levant.structured.syntax import OutputSpec
from levant.structured.tools import FunctionTool, ToolChoice, new_tool_call_id

_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# Mistral's documented guardrail prompt, prepended to the system prompt by safe_prompt.
SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet "
    "securely. Avoid harmful, unethical, prejudiced, or negative content. Ensure "
    "replies promote fairness and positivity."
)


def _text(message: Message, index: int, card: ModelCard) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if part.type == "text" and part.text is not None:
            parts.append(part.text)
        elif part.type in ("image_url", "input_image", "image"):
            raise APIError(
                400,
                f"Model '{card.id}' does not support image input (capability: vision)",
                param=f"messages[{index}].content",
                code="unsupported_capability",
            )
        else:
            raise APIError(
                400,
                f"Unsupported content part type '{part.type}'",
                param=f"messages[{index}].content",
                code="invalid_value",
            )
    return "".join(parts)


def to_chat_messages(body: ChatCompletionRequest, card: ModelCard) -> list[ChatMessage]:
    if (
        body.tools or any(m.role == "tool" or m.tool_calls for m in body.messages)
    ) and not card.capabilities.function_calling:
        raise APIError(
            400,
            f"Model '{card.id}' does not support tool calling (capability: function_calling)",
            param="tools",
            code="unsupported_capability",
        )
    unsupported = {
        "prompt_logprobs": bool(body.prompt_logprobs),
        "guardrails": bool(body.guardrails),
        "repetition_penalty": body.repetition_penalty not in (None, 1.0),
    }
    for param, used in unsupported.items():
        if used:
            raise APIError(400, f"{param} is not supported yet", param=param, code="invalid_value")

    last = len(body.messages) - 1
    out: list[ChatMessage] = []
    call_names: dict[str, str] = {}  # tool-call id -> function, to name tool results
    for i, m in enumerate(body.messages):
        if m.prefix and (m.role != "assistant" or i != last):
            raise APIError(
                400,
                "prefix is only allowed on the last message, which must be an assistant message",
                param=f"messages[{i}].prefix",
                code="invalid_value",
            )
        role = "system" if m.role == "developer" else m.role
        calls = _tool_calls(m, i) if m.role == "assistant" else ()
        call_names.update((c.id, c.name) for c in calls)
        name = m.name
        if m.role == "tool" and name is None and m.tool_call_id is not None:
            name = call_names.get(m.tool_call_id)
        out.append(
            ChatMessage(
                role=role,
                content=_text(m, i, card),
                prefix=m.prefix,
                name=name,
                tool_call_id=m.tool_call_id,
                tool_calls=calls,
            )
        )
    final = body.messages[last]
    if final.role not in ("user", "tool") and not (final.role == "assistant" and final.prefix):
        raise APIError(
            400,
            f"Expected last role user or tool (or assistant with prefix true) but got {final.role}",
            param=f"messages[{last}].role",
            code="invalid_value",
        )
    if body.safe_prompt:
        if out[0].role == "system":
            first = out[0]
            out[0] = ChatMessage("system", f"{SAFE_PROMPT}\n\n{first.content}", name=first.name)
        else:
            out.insert(0, ChatMessage("system", SAFE_PROMPT))
    return out


def _tool_calls(message: Message, index: int) -> tuple[ToolCall, ...]:
    calls = []
    for j, call in enumerate(message.tool_calls or []):
        arguments: Any = call.function.arguments
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = None
        if not isinstance(arguments, dict):
            raise APIError(
                400,
                "Tool call arguments must be a JSON object",
                param=f"messages[{index}].tool_calls[{j}].function.arguments",
                code="invalid_value",
            )
        text = json.dumps(arguments, ensure_ascii=False)
        call_id = call.id if call.id and call.id != "null" else new_tool_call_id()
        calls.append(ToolCall(call_id, call.function.name, text))
    return tuple(calls)


def output_spec(body: ChatCompletionRequest) -> OutputSpec | None:
    """What the output must look like, or None for plain text without tools."""
    fmt = body.response_format
    schema: dict[str, Any] | None = None
    strict = True
    if fmt is not None and fmt.type == "json_object":
        schema = {"type": "object"}
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise APIError(
                400,
                "response_format of type json_schema needs json_schema.schema",
                param="response_format.json_schema",
                code="invalid_value",
            )
        schema = fmt.json_schema.schema_
        strict = bool(fmt.json_schema.strict)
    tools = []
    for i, tool in enumerate(body.tools or []):
        fn = tool.function
        if not _FUNCTION_NAME.match(fn.name):
            raise APIError(
                400,
                f"Invalid function name '{fn.name}': use 1-64 letters, digits, '_' or '-'",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        tools.append(
            FunctionTool(fn.name, fn.description or "", fn.parameters or {}, bool(fn.strict))
        )
    history = any(m.role == "tool" or m.tool_calls for m in body.messages)
    if schema is None and not tools and not history and body.tool_choice in (None, "auto", "none"):
        return None
    choice = body.tool_choice
    if choice is None or choice == "auto":
        tool_choice = ToolChoice("auto")
    elif choice == "none":
        tool_choice = ToolChoice("none")
    elif isinstance(choice, str):  # Mistral's "any" is OpenAI's "required"
        tool_choice = ToolChoice("required")
    else:
        tool_choice = ToolChoice("required", choice.function.name)
    return OutputSpec(
        response_schema=schema,
        response_strict=strict,
        tools=tuple(tools),
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )
