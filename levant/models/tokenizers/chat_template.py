"""Rendering a Hugging Face / GGUF Jinja chat template to prompt text.

Templates come from model files, so they are untrusted code: they run in Jinja's
immutable sandbox. The environment and the variables a template sees mirror
transformers' ``apply_chat_template`` so that the rendered text is identical;
turning text into ids is the tokenizer's business, not this module's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.utils
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from levant.models.tokenizers.protocol import ChatMessage

__all__ = ["ChatTemplate", "SecurityError", "TemplateError", "message_to_dict"]

# transformers appends this to the message being continued, renders, and cuts the
# text at it; using the same tag keeps the cut identical for templates that trim.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own ``tojson`` HTML-escapes; chat templates want plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """``dict`` for templates without exposing the ``dict`` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` that refuses underscore names (no dunder smuggling)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"chat templates cannot set underscore attributes ({name!r})")


class _GenerationTag(jinja2.ext.Extension):
    """Accept transformers' ``{% generation %}...{% endgeneration %}`` as a no-op block.

    transformers uses it to mask assistant tokens for training; for serving only
    the text matters, but templates using the tag must still compile.
    """

    tags = {"generation"}  # noqa: RUF012 - Jinja's Extension API declares it this way

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return str(caller())


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


def message_to_dict(message: ChatMessage) -> dict[str, Any]:
    """The message as a template sees it: unset fields are absent, like transformers does.

    ``prefix`` is not passed: continuing a message is done by cutting the
    rendered text (see ``ChatTemplate.render_chat``), not by the template. Tool calls
    take transformers' shape, arguments as a mapping (templates ``tojson`` them).
    """
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call.arguments)},
            }
            for call in message.tool_calls
        ]
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class ChatTemplate:
    """A compiled, sandboxed chat template plus the special-token strings it may use."""

    def __init__(self, source: str, special_tokens: Mapping[str, str | None] | None = None) -> None:
        self.source = source
        # e.g. {"bos_token": "<s>", "eos_token": "</s>"}: transformers passes its
        # special_tokens_map as template variables.
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self._template = _environment().from_string(source)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool,
        **variables: Any,
    ) -> str:
        """Render plain message dicts, as ``apply_chat_template(tokenize=False)`` would."""
        context: dict[str, Any] = {
            **self.special_tokens,
            **variables,
            "messages": [dict(m) for m in messages],
            "tools": variables.get("tools"),
            "documents": variables.get("documents"),
            "add_generation_prompt": add_generation_prompt,
        }
        return self._template.render(**context)

    def render_chat(self, messages: Sequence[ChatMessage], **variables: Any) -> str:
        """Prompt text: a generation prompt, or the open last assistant message if ``prefix``.

        Mirrors transformers' ``continue_final_message``: tag the final content,
        render without generation prompt, and cut at the tag.
        """
        dicts = [message_to_dict(m) for m in messages]
        continuing = bool(messages) and messages[-1].role == "assistant" and messages[-1].prefix
        if not continuing:
            return self.render(dicts, add_generation_prompt=True, **variables)

        final = dicts[-1]["content"]
        dicts[-1]["content"] = final + _CONTINUE_TAG
        rendered = self.render(dicts, add_generation_prompt=False, **variables)
        tag = _CONTINUE_TAG.strip()
        if final.strip() not in rendered or tag not in rendered:
            raise ValueError(
                "the chat template dropped part of the assistant prefix, so it cannot be continued"
            )
        cut = rendered.rindex(tag)
        if rendered[cut : cut + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
            return rendered[:cut]
        # The template trimmed the trailing space of the tag, so trim ours too.
        return rendered[:cut].rstrip()

    @property
    def renders_tools(self) -> bool:
        """Whether the template reads the ``tools`` variable (transformers' heuristic)."""
        return "tools" in self.source

    def text_after_assistant(self) -> str | None:
        """Text the template writes right after an assistant message's content.

        ``None`` if the template cannot render the probe conversation. Callers use
        this to find the end-of-turn token (e.g. ``<|im_end|>``).
        """
        marker = "\ue000levant-probe\ue000"
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
        try:
            rendered = self.render(probe, add_generation_prompt=False)
        except Exception:  # any template error means "unknown", not a load failure
            return None
        at = rendered.find(marker)
        return rendered[at + len(marker) :] if at >= 0 else None
