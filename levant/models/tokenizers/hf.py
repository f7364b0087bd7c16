"""``Tokenizer`` over the Hugging Face ``tokenizers`` library and a Jinja chat template.

Holds a ready ``tokenizers.Tokenizer`` plus what transformers keeps beside it
(bos/eos strings, ``add_bos_token``, the chat template). Building one from a HF
directory lives here; building one from GGUF metadata lives in ``gguf.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import tokenizers

from levant.models.tokenizers.chat_template import ChatTemplate
from levant.models.tokenizers.protocol import ChatMessage, ToolDefinition

__all__ = ["HFTokenizer"]


class HFTokenizer:
    """Byte-level/BPE/any ``tokenizers`` model with a chat template; implements ``Tokenizer``."""

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        *,
        chat_template: str | None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        add_bos_token: bool = False,
        extra_eos_ids: Sequence[int] = (),
    ) -> None:
        self._tok = tokenizer
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.add_bos_token = add_bos_token
        """Whether the model expects BOS on raw text (transformers' ``add_bos_token``)."""
        self.chat_template = (
            ChatTemplate(
                chat_template,
                {
                    "bos_token": bos_token,
                    "eos_token": eos_token,
                    "unk_token": unk_token,
                    "pad_token": pad_token,
                },
            )
            if chat_template
            else None
        )
        self._bos_id = self._id_of(bos_token)
        eos = {i for i in (self._id_of(eos_token), *extra_eos_ids) if i is not None}
        end_of_turn = self._end_of_turn_id()
        if end_of_turn is not None:
            eos.add(end_of_turn)
        self._eos_ids = frozenset(eos)
        self._plain_text_lock = threading.Lock()
        specials = {
            i: t.content for i, t in tokenizer.get_added_tokens_decoder().items() if t.special
        }
        self._special_ids = frozenset(specials)
        self._special_texts = list(specials.values())

    # -- Tokenizer protocol -------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_ids(self) -> frozenset[int]:
        return self._eos_ids

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        # add_special_tokens=False: BOS is the caller's explicit choice, never
        # the tokenizer.json post-processor's.
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self._bos_id is None:
                raise ValueError("this tokenizer has no BOS token")
            ids.insert(0, self._bos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] | None = None
    ) -> list[int]:
        # Like transformers' apply_chat_template(tokenize=True): the template
        # writes every special token itself, so none are added on encode.
        if not any(self._has_special_text(m.content) for m in messages):
            return self.encode(self.render_chat_text(messages, tools))
        return self._render_chat_as_data(messages, tools)

    @property
    def supports_tools(self) -> bool:
        return self.chat_template is not None and self.chat_template.renders_tools

    def _has_special_text(self, text: str) -> bool:
        return any(token in text for token in self._special_texts)

    def _render_chat_as_data(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] | None = None
    ) -> list[int]:
        """Encode the prompt so special tokens spelled inside message text stay plain text.

        A user who types ``<|im_end|>`` must not close their own turn: message
        contents are data. The template is rendered with placeholders to learn
        where each content sits; the prompt is encoded as usual, and only the
        special tokens that fall inside a content span are re-encoded as text.
        """
        marks = [f"\x00levant-content-{i}\x00" for i in range(len(messages))]
        masked = [replace(m, content=mark) for m, mark in zip(messages, marks, strict=True)]
        rest = self.render_chat_text(masked, tools)
        if any(rest.count(mark) != 1 for mark in marks):
            raise ValueError(
                "a message contains a control token and this chat template transforms "
                "message text, so it cannot be kept as plain text"
            )
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for message, mark in zip(messages, marks, strict=True):
            before, rest = rest.split(mark, 1)
            pos += len(before)
            spans.append((pos, pos + len(message.content)))
            pos += len(message.content)
            parts += [before, message.content]
        text = "".join([*parts, rest])
        encoding = self._tok.encode(text, add_special_tokens=False)
        injected = [
            (start, end)
            for token_id, (start, end) in zip(encoding.ids, encoding.offsets, strict=True)
            if token_id in self._special_ids and any(a <= start and end <= b for a, b in spans)
        ]
        if not injected:
            return list(encoding.ids)
        ids: list[int] = []
        cursor = 0
        for start, end in injected:
            ids += self._tok.encode(text[cursor:start], add_special_tokens=False).ids
            ids += self._encode_as_plain_text(text[start:end])
            cursor = end
        return ids + self._tok.encode(text[cursor:], add_special_tokens=False).ids

    def _encode_as_plain_text(self, text: str) -> list[int]:
        with self._plain_text_lock:  # the switch is a property of the shared tokenizer
            self._tok.encode_special_tokens = True
            try:
                return list(self._tok.encode(text, add_special_tokens=False).ids)
            finally:
                self._tok.encode_special_tokens = False

    # -- extras ---------------------------------------------------------------

    def render_chat_text(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition] | None = None
    ) -> str:
        """The prompt as text, before tokenization; ``tools`` go to the template."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        if not tools:
            return self.chat_template.render_chat(messages)
        if not self.supports_tools:
            raise ValueError("this chat template has no syntax for tools")
        return self.chat_template.render_chat(messages, tools=[dict(t) for t in tools])

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def token_to_id(self, token: str) -> int | None:
        found = self._tok.token_to_id(token)
        return int(found) if found is not None else None

    def _id_of(self, token: str | None) -> int | None:
        return self.token_to_id(token) if token is not None else None

    def _end_of_turn_id(self) -> int | None:
        """The special token a template closes an assistant turn with, if any."""
        if self.chat_template is None:
            return None
        after = self.chat_template.text_after_assistant()
        if not after:
            return None
        first = self._tok.encode(after, add_special_tokens=False).ids[:1]
        special = {int(i) for i, t in self._tok.get_added_tokens_decoder().items() if t.special}
        return first[0] if first and first[0] in special else None

    # -- loading ------------------------------------------------------------------

    @classmethod
    def from_directory(cls, path: Path) -> HFTokenizer:
        """Load ``tokenizer.json`` + ``tokenizer_config.json`` (+ ``chat_template.jinja``)."""
        tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        config = _read_json(path / "tokenizer_config.json")
        special_map = _read_json(path / "special_tokens_map.json")

        def token(name: str) -> str | None:
            return _token_content(config.get(name, special_map.get(name)))

        return cls(
            tokenizer,
            chat_template=_chat_template(path, config),
            bos_token=token("bos_token"),
            eos_token=token("eos_token"),
            unk_token=token("unk_token"),
            pad_token=token("pad_token"),
            add_bos_token=bool(config.get("add_bos_token", False)),
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_content(value: object) -> str | None:
    """A special token as a string; configs store either ``"<s>"`` or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _chat_template(path: Path, config: Mapping[str, Any]) -> str | None:
    """The default chat template; a ``chat_template.jinja`` file wins, as in transformers."""
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, str):
        return template
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        default = named.get("default")
        return default if isinstance(default, str) else None
    return None
