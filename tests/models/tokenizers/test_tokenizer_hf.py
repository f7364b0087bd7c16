"""A HF tokenizer directory, loaded by us and by transformers from the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers.models import BPE

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.loader import load_tokenizer
from levant.models.tokenizers.protocol import ChatMessage

SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Hello there, how are you doing today?",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers like 12345 and 3.14 appear in text.",
    "Café, naïve, résumé; 日本語; emoji 🤖.",
    "def main():\n    print('hello world')\n",
] * 20

MISTRAL_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _write_tokenizer_dir(directory: Path, chat_template: str, *, jinja_file: str | None) -> Path:
    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    # A post-processor that adds BOS: chat prompts must not get a second one.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True},
        "unk_token": "<unk>",
        "add_bos_token": True,
        "chat_template": chat_template,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if jinja_file is not None:
        (directory / "chat_template.jinja").write_text(jinja_file, encoding="utf-8")
    return directory


@pytest.fixture(scope="module", params=["config", "jinja-file"])
def hf_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp(f"hf-{request.param}")
    if request.param == "config":
        return _write_tokenizer_dir(directory, MISTRAL_LIKE, jinja_file=None)
    # chat_template.jinja wins over the config's template, as in transformers.
    return _write_tokenizer_dir(directory, MISTRAL_LIKE, jinja_file=CHATML)


@pytest.fixture(scope="module")
def reference(hf_dir: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(hf_dir)


@pytest.fixture(scope="module")
def ours(hf_dir: Path) -> HFTokenizer:
    tok = load_tokenizer(hf_dir)
    assert isinstance(tok, HFTokenizer)
    return tok


CONVERSATIONS = [
    [ChatMessage("user", "Hello there")],
    [
        ChatMessage("user", "how are you?"),
        ChatMessage("assistant", "The quick brown fox."),
        ChatMessage("user", "Numbers 12345 and 🤖"),
    ],
]


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_chat_matches_transformers(ours: HFTokenizer, reference: Any, index: int) -> None:
    conversation = CONVERSATIONS[index]
    expected = reference.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in conversation],
        tokenize=True,
        add_generation_prompt=True,
        return_dict=False,
    )
    assert ours.render_chat(conversation) == expected


def test_prefix_matches_continue_final_message(ours: HFTokenizer, reference: Any) -> None:
    conversation = [
        ChatMessage("user", "Hello"),
        ChatMessage("assistant", "The quick", prefix=True),
    ]
    expected = reference.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in conversation],
        tokenize=True,
        continue_final_message=True,
        return_dict=False,
    )
    assert ours.render_chat(conversation) == expected


@pytest.mark.parametrize("text", ["Hello there", "  Café 12345\n\ttabs", "[INST] hi [/INST]", ""])
def test_encode_matches_transformers(ours: HFTokenizer, reference: Any, text: str) -> None:
    assert ours.encode(text) == reference.encode(text, add_special_tokens=False)
    assert ours.encode(text, add_bos=True) == reference.encode(text)  # add_bos_token: true
    assert ours.decode(ours.encode(text, add_bos=True)) == reference.decode(
        reference.encode(text), skip_special_tokens=True
    )


def test_special_tokens(ours: HFTokenizer, reference: Any, hf_dir: Path) -> None:
    assert ours.bos_id == ours.token_to_id("<s>")
    assert ours.add_bos_token is True
    eos = ours.token_to_id("</s>")
    if (hf_dir / "chat_template.jinja").exists():
        # ChatML closes turns with <|im_end|>: generation must stop there too.
        assert ours.eos_ids == {eos, ours.token_to_id("<|im_end|>")}
    else:
        assert ours.eos_ids == {eos}
    assert ours.vocab_size == len(reference)


def test_template_errors_surface(ours: HFTokenizer, hf_dir: Path) -> None:
    if (hf_dir / "chat_template.jinja").exists():
        pytest.skip("ChatML does not check alternation")
    with pytest.raises(Exception, match="alternate"):
        ours.render_chat([ChatMessage("assistant", "x"), ChatMessage("user", "y")])
