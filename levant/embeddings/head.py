"""What sentence-transformers' files say to do after the encoder: pooling and normalisation.

Boundary: a model directory in (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``), a small ``SentenceHead`` out. A directory without
those files is read as plain mean pooling with unit-length output, which is what
sentence-transformers itself builds for a bare encoder plus ``Normalize``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["mean", "cls", "max"]

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES: dict[str, Pooling] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


@dataclass(frozen=True)
class SentenceHead:
    pooling: Pooling = "mean"
    normalize: bool = True
    """L2-normalise the pooled vector (sentence-transformers' ``Normalize`` module)."""
    max_seq_length: int | None = None
    """Tokens per input the model was trained on, special tokens included."""


def read_sentence_head(path: Path) -> SentenceHead:
    """The pooling/normalisation a sentence-transformers directory declares.

    Refuses what we do not implement (a dense projection, several pooling modes at once)
    rather than produce vectors that quietly differ from the reference.
    """
    modules_file = path / "modules.json"
    max_seq_length = _read(path / "sentence_bert_config.json").get("max_seq_length")
    max_len = int(max_seq_length) if max_seq_length is not None else None
    if not modules_file.is_file():
        return SentenceHead(max_seq_length=max_len)
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    types = [m.get("type") for m in modules]
    unknown = [t for t in types if t not in (_TRANSFORMER, _POOLING, _NORMALIZE)]
    if unknown:
        raise ValueError(f"{path}: unsupported sentence-transformers modules {unknown}")
    pooling: Pooling = "mean"
    for module in modules:
        if module.get("type") == _POOLING:
            pooling = _pooling_mode(_read(path / module.get("path", "") / "config.json"), path)
    return SentenceHead(pooling=pooling, normalize=_NORMALIZE in types, max_seq_length=max_len)


def _pooling_mode(config: dict[str, Any], path: Path) -> Pooling:
    chosen = [mode for key, mode in _POOLING_MODES.items() if config.get(key)]
    others = [
        k
        for k, v in config.items()
        if k.startswith("pooling_mode") and v and k not in _POOLING_MODES
    ]
    if len(chosen) != 1 or others:
        raise ValueError(f"{path}: unsupported pooling configuration {config}")
    return chosen[0]


def _read(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    data = json.loads(file.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
