"""``load_tokenizer`` picks the backend from the files present."""

from __future__ import annotations

import shutil
from pathlib import Path

import mistral_common
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.loader import find_mistral_tokenizer_file, load_tokenizer
from levant.models.tokenizers.mistral import MistralTokenizer

DATA = Path(mistral_common.__file__).parent / "data"


def test_gguf_file_and_directory(smollm2_gguf_path: Path, tmp_path: Path) -> None:
    assert isinstance(load_tokenizer(smollm2_gguf_path), HFTokenizer)
    (tmp_path / "model.gguf").symlink_to(smollm2_gguf_path)
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer)
    assert tok.vocab_size == 49152


def test_several_ggufs_are_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match="several"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    ("shipped", "name", "version"),
    [
        ("tekken_240911.json", "tekken.json", "v3"),
        ("mistral_instruct_tokenizer_241114.model.v7", "tokenizer.model.v7", "v7"),
        ("mistral_instruct_tokenizer_240323.model.v3", "tokenizer.model.v3", "v3"),
    ],
)
def test_mistral_checkpoint_directory(
    tmp_path: Path, shipped: str, name: str, version: str
) -> None:
    shutil.copy(DATA / shipped, tmp_path / name)
    (tmp_path / "consolidated.safetensors").write_bytes(b"")
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, MistralTokenizer)
    assert tok.version == version
    assert isinstance(load_tokenizer(tmp_path / name), MistralTokenizer)


def test_tekken_preferred_over_sentencepiece(tmp_path: Path) -> None:
    shutil.copy(DATA / "tekken_240911.json", tmp_path / "tekken.json")
    shutil.copy(DATA / "tokenizer.model.v1", tmp_path / "tokenizer.model.v1")
    assert find_mistral_tokenizer_file(tmp_path) == tmp_path / "tekken.json"


def test_highest_sentencepiece_version_wins(tmp_path: Path) -> None:
    for name in ("tokenizer.model.v3", "tokenizer.model.v7", "tokenizer.model.v7m1"):
        (tmp_path / name).write_bytes(b"")
    assert find_mistral_tokenizer_file(tmp_path) == tmp_path / "tokenizer.model.v7m1"


def test_hf_directory(tmp_path: Path) -> None:
    Tokenizer(WordLevel({"<unk>": 0, "hi": 1}, unk_token="<unk>")).save(
        str(tmp_path / "tokenizer.json")
    )
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("hi") == [1]
    assert tok.bos_id is None and tok.eos_ids == frozenset()


def test_nothing_to_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokenizer found"):
        load_tokenizer(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        load_tokenizer(tmp_path / "weights.bin")
    with pytest.raises(ValueError, match="no such file"):
        load_tokenizer(tmp_path / "missing")
