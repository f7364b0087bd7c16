"""Choosing and loading the right tokenizer for a model path.

Callers pass a file or directory and get a ``Tokenizer``; which backend reads
it (GGUF metadata, mistral-common, HF ``tokenizer.json``) is decided here from
the files present, and nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path

from levant.models.tokenizers.gguf import load_gguf_tokenizer
from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import Tokenizer

__all__ = ["find_mistral_tokenizer_file", "load_tokenizer"]

_SPM_VERSIONED = re.compile(r"^tokenizer\.model\.v\d+(m\d+)?$")


def load_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer for a ``.gguf`` file, or a model directory.

    A directory is read, in order of preference, as a Mistral consolidated
    checkpoint (``tekken.json`` / ``tokenizer.model.v*``), a HF directory
    (``tokenizer.json``), or a directory holding exactly one ``.gguf`` file.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix == ".gguf":
            return load_gguf_tokenizer(path)
        if path.name == "tekken.json" or _SPM_VERSIONED.match(path.name):
            return MistralTokenizer.from_file(path)
        raise ValueError(
            f"{path}: not a tokenizer file this loader knows (.gguf, tekken.json, ...)"
        )
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")

    mistral_file = find_mistral_tokenizer_file(path)
    if mistral_file is not None:
        return MistralTokenizer.from_file(mistral_file)
    if (path / "tokenizer.json").is_file():
        return HFTokenizer.from_directory(path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return load_gguf_tokenizer(ggufs[0])
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise ValueError(f"{path}: several .gguf files ({names}); pass the one to use")
    raise ValueError(
        f"{path}: no tokenizer found (expected tekken.json, tokenizer.model.v*, "
        "tokenizer.json or one .gguf file)"
    )


def find_mistral_tokenizer_file(directory: Path) -> Path | None:
    """``tekken.json``, else the highest-versioned ``tokenizer.model.v*``, if present."""
    tekken = directory / "tekken.json"
    if tekken.is_file():
        return tekken
    versioned = [p for p in directory.iterdir() if p.is_file() and _SPM_VERSIONED.match(p.name)]
    if not versioned:
        return None
    return max(versioned, key=lambda p: _version_key(p.name))


def _version_key(name: str) -> tuple[int, int]:
    match = re.search(r"\.v(\d+)(?:m(\d+))?$", name)
    assert match is not None  # guaranteed by _SPM_VERSIONED
    return int(match.group(1)), int(match.group(2) or 0)
