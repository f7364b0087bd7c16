"""Wire chat messages -> internal ``ChatMessage`` list, with Mistral's serving rules.

Everything a model cannot honour is refused here with a 400 that names the
capability, before any token is generated.
"""

from __future__ import annotations

from levant.api.errors import APIError
from levant.api.schemas.chat import ChatCompletionRequest, Message
from levant.catalog.card import ModelCard
from levant.models.tokenizers.protocol import ChatMessage

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
    if body.response_format is not None and body.response_format.type != "text":
        raise APIError(
            400,
            f"response_format '{body.response_format.type}' is not supported by model '{card.id}'",
            param="response_format",
            code="unsupported_capability",
        )
    if body.n is not None and body.n > 1:
        raise APIError(
            400,
            "n > 1 is not supported yet; send n separate requests",
            param="n",
            code="invalid_value",
        )
    unsupported = {
        "logprobs": bool(body.logprobs),
        "prompt_logprobs": bool(body.prompt_logprobs),
        "guardrails": bool(body.guardrails),
        "repetition_penalty": body.repetition_penalty not in (None, 1.0),
    }
    for param, used in unsupported.items():
        if used:
            raise APIError(400, f"{param} is not supported yet", param=param, code="invalid_value")

    last = len(body.messages) - 1
    out: list[ChatMessage] = []
    for i, m in enumerate(body.messages):
        if m.prefix and (m.role != "assistant" or i != last):
            raise APIError(
                400,
                "prefix is only allowed on the last message, which must be an assistant message",
                param=f"messages[{i}].prefix",
                code="invalid_value",
            )
        role = "system" if m.role == "developer" else m.role
        out.append(
            ChatMessage(
                role=role,
                content=_text(m, i, card),
                prefix=m.prefix,
                name=m.name,
                tool_call_id=m.tool_call_id,
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
