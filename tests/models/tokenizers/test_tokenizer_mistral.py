"""The mistral-common adapter, on the tokenizer files shipped in mistral_common's wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import mistral_common
import pytest
from mistral_common.protocol.instruct.messages import (
    AssistantMessage,
    SystemMessage,
    UserMessage,
)
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as Reference

from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import ChatMessage

DATA = Path(mistral_common.__file__).parent / "data"
FILES = {
    "v1": DATA / "tokenizer.model.v1",
    "v3": DATA / "mistral_instruct_tokenizer_240323.model.v3",
    "v7": DATA / "mistral_instruct_tokenizer_241114.model.v7",
    "tekken": DATA / "tekken_240911.json",
}

CONVERSATIONS = [
    [ChatMessage("user", "Hello")],
    [ChatMessage("system", "You are terse."), ChatMessage("user", "What is 2+2?")],
    [
        ChatMessage("system", "Answer in French."),
        ChatMessage("user", "Hi!"),
        ChatMessage("assistant", "Bonjour !"),
        ChatMessage("user", "Ça va ? 🤖\n\nParle-moi de 1990."),
    ],
    [
        ChatMessage("user", "List fruits."),
        ChatMessage("assistant", "1. Apple\n2.", prefix=True),
    ],
    [
        ChatMessage("system", "Be kind."),
        ChatMessage("user", "a"),
        ChatMessage("assistant", "b"),
        ChatMessage("user", "c"),
        ChatMessage("assistant", "Sure,", prefix=True),
    ],
]


@cache
def _reference(path: Path) -> Reference:  # type: ignore[type-arg]
    return Reference.from_file(str(path))


def _reference_ids(path: Path, conversation: list[ChatMessage]) -> list[int]:
    """mistral-common used directly, with its own message types."""
    messages: list[SystemMessage | UserMessage | AssistantMessage] = []
    for m in conversation:
        if m.role == "system":
            messages.append(SystemMessage(content=m.content))
        elif m.role == "user":
            messages.append(UserMessage(content=m.content))
        else:
            messages.append(AssistantMessage(content=m.content, prefix=m.prefix))
    tokenized = _reference(path).encode_chat_completion(ChatCompletionRequest(messages=messages))
    return list(tokenized.tokens)


@pytest.fixture(scope="module", params=sorted(FILES))
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tokenizer(version: str) -> MistralTokenizer:
    return MistralTokenizer.from_file(FILES[version])


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_ids_match_mistral_common(version: str, tokenizer: MistralTokenizer, index: int) -> None:
    conversation = CONVERSATIONS[index]
    assert tokenizer.render_chat(conversation) == _reference_ids(FILES[version], conversation)


def _control(tokenizer: MistralTokenizer, token: str) -> int:
    return int(tokenizer.inner.instruct_tokenizer.tokenizer.get_special_token(token))


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_prompt_structure(version: str, tokenizer: MistralTokenizer, index: int) -> None:
    conversation = CONVERSATIONS[index]
    ids = tokenizer.render_chat(conversation)
    assert ids[0] == tokenizer.bos_id
    assert ids.count(tokenizer.bos_id) == 1
    users = sum(m.role == "user" for m in conversation)
    finished_assistants = sum(m.role == "assistant" and not m.prefix for m in conversation)
    eos = next(iter(tokenizer.eos_ids))
    assert ids.count(eos) == finished_assistants
    last = conversation[-1]
    if version == "v1":
        # v1 writes [INST] as text, not as control tokens.
        text = tokenizer.decode(ids)
        assert text.count("[INST]") == users and text.count("[/INST]") == users
    else:
        inst, end_inst = _control(tokenizer, "[INST]"), _control(tokenizer, "[/INST]")
        assert ids.count(inst) == ids.count(end_inst) == users
        starts = [i for i, t in enumerate(ids) if t == inst]
        ends = [i for i, t in enumerate(ids) if t == end_inst]
        assert all(s < e for s, e in zip(starts, ends, strict=True))
        if last.role == "user":
            assert ids[-1] == end_inst
    if last.prefix:
        # The prompt ends inside the assistant turn: its text, and no EOS.
        assert ids[-1] != eos
        assert tokenizer.decode(ids).endswith(last.content)


def test_system_prompt_placement(version: str, tokenizer: MistralTokenizer) -> None:
    ids = tokenizer.render_chat(CONVERSATIONS[2])
    if version == "v7":
        system = _control(tokenizer, "[SYSTEM_PROMPT]")
        assert ids[1] == system  # right after BOS, before the first [INST]
    else:
        # Older versions fold the system prompt into a user message: v1 the
        # first, v2/v3 the last.
        text = tokenizer.decode(ids)
        after_first_turn = text.index("Answer in French.") > text.index("Bonjour")
        assert after_first_turn == (version != "v1")


@pytest.mark.parametrize(
    "text", ["Hello world", "  spaced  out  ", "naïve café 日本語 🤖", "def f(x):\n\treturn x\n"]
)
def test_encode_decode_round_trip(tokenizer: MistralTokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.bos_id not in ids
    assert tokenizer.encode(text, add_bos=True) == [tokenizer.bos_id, *ids]


def test_control_text_is_not_a_control_token(version: str, tokenizer: MistralTokenizer) -> None:
    if version == "v1":
        pytest.skip("v1 has no [INST] control token")
    assert _control(tokenizer, "[INST]") not in tokenizer.encode("[INST] hi [/INST]")


def test_sizes(version: str, tokenizer: MistralTokenizer) -> None:
    assert tokenizer.vocab_size == (
        131072 if version == "tekken" else 32000 if version == "v1" else 32768
    )
    assert tokenizer.eos_ids == {2}


def test_fim(version: str, tokenizer: MistralTokenizer) -> None:
    if version == "v1":
        with pytest.raises(ValueError, match="fill-in-the-middle"):
            tokenizer.encode_fim("def f(", "\n    return x")
        return
    ids = tokenizer.encode_fim("def add(a, b):\n    return ", "\n\nprint(add(1, 2))")
    suffix, prefix = _control(tokenizer, "[SUFFIX]"), _control(tokenizer, "[PREFIX]")
    assert ids[:2] == [tokenizer.bos_id, suffix]
    assert ids.index(prefix) > 1
    assert tokenizer.decode(ids[ids.index(prefix) + 1 :]) == "def add(a, b):\n    return "


def test_fim_refused_without_control_tokens() -> None:
    v2 = MistralTokenizer.from_file(DATA / "mistral_instruct_tokenizer_240216.model.v2")
    with pytest.raises(ValueError, match=r"\[PREFIX\]"):
        v2.encode_fim("a", "b")
