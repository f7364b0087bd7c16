"""Chat templates: same prompts as transformers' apply_chat_template, and a real sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from levant.models.tokenizers.chat_template import ChatTemplate, SecurityError, TemplateError
from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.protocol import ChatMessage

CONVERSATIONS = [
    [ChatMessage("user", "Hi there")],
    [ChatMessage("system", "You are terse."), ChatMessage("user", "What is 2+2?")],
    [
        ChatMessage("system", "Answer in French."),
        ChatMessage("user", "Hello!"),
        ChatMessage("assistant", "Bonjour !"),
        ChatMessage("user", "How are you? 🤖\n\nTell me  about 1990."),
    ],
    [
        ChatMessage("user", "Write code"),
        ChatMessage("assistant", "def f():\n    return 1\n"),
        ChatMessage("user", "Now in C"),
    ],
]


def _dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_smollm2_prompt_matches_transformers(
    smollm2_tokenizer: HFTokenizer, smollm2_reference: Any, conversation: list[ChatMessage]
) -> None:
    expected = smollm2_reference.apply_chat_template(
        _dicts(conversation), tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert smollm2_tokenizer.render_chat(conversation) == expected
    assert smollm2_tokenizer.render_chat_text(conversation).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "conversation",
    [
        [ChatMessage("user", "Say hi"), ChatMessage("assistant", "Hello, my name", prefix=True)],
        [
            ChatMessage("system", "Be kind."),
            ChatMessage("user", "List three fruits."),
            ChatMessage("assistant", "1. Apple\n2.", prefix=True),
        ],
    ],
)
def test_smollm2_prefix_matches_continue_final_message(
    smollm2_tokenizer: HFTokenizer, smollm2_reference: Any, conversation: list[ChatMessage]
) -> None:
    expected = smollm2_reference.apply_chat_template(
        _dicts(conversation), tokenize=True, continue_final_message=True, return_dict=False
    )
    ids = smollm2_tokenizer.render_chat(conversation)
    assert ids == expected
    end_of_turn = smollm2_tokenizer.token_to_id("<|im_end|>")
    # The assistant turn stays open: the prompt ends with its content, not <|im_end|>.
    assert ids[-1] != end_of_turn
    assert smollm2_tokenizer.render_chat_text(conversation).endswith(conversation[-1].content)


def test_variables_like_transformers() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}"
        "{% if add_generation_prompt %}{{ eos_token }}{% endif %}{{ strftime_now('%Y') | length }}",
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": None},
    )
    out = template.render([{"role": "user", "content": 'café "x"'}], add_generation_prompt=True)
    assert out == '<s>"café \\"x\\""</s>4'


def test_trim_and_lstrip_blocks() -> None:
    template = ChatTemplate(
        "{% for m in messages %}\n    {% if m.content %}{{ m.content }}{% endif %}\n{% endfor %}"
    )
    assert template.render([{"role": "user", "content": "a"}], add_generation_prompt=False) == "a"


def test_raise_exception_is_a_template_error() -> None:
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        template.render([], add_generation_prompt=True)


def test_generation_tag_and_loop_controls_compile() -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert template.render(messages, add_generation_prompt=False) == "u"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
        "{{ raise_exception.__globals__['__builtins__'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% set ns = namespace(__class__=1) %}",
        "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
        "{{ messages[0].update({'content': 'x'}) }}",
    ],
)
def test_sandbox_blocks_escapes(source: str) -> None:
    template = ChatTemplate(source)
    with pytest.raises(SecurityError):
        template.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)


def test_prefix_needs_the_content_in_the_prompt() -> None:
    template = ChatTemplate("{% for m in messages %}{{ m.role }}{% endfor %}")
    messages = [ChatMessage("user", "a"), ChatMessage("assistant", "partial", prefix=True)]
    with pytest.raises(ValueError, match="prefix"):
        template.render_chat(messages)
