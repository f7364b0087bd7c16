"""Load a Hugging Face BERT checkpoint directory into our ``BertConfig`` and names.

Boundary: ``config.json`` plus ``model.safetensors`` in; ``(BertConfig, state_dict)``
out. The pooler (BERT's [CLS] classifier head) is dropped: sentence embeddings are
pooled from the token states by ``levant.embeddings``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from levant.models.bert import Activation, BertConfig

_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}
_GLOBAL_NAMES = {
    "embeddings.word_embeddings": "embeddings.token",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.segment",
    "embeddings.LayerNorm": "embeddings.norm",
}
_LAYER_NAMES = {
    "attention.self.query": "attention.wq",
    "attention.self.key": "attention.wk",
    "attention.self.value": "attention.wv",
    "attention.output.dense": "attention.wo",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "feed_forward.w1",
    "output.dense": "feed_forward.w2",
    "output.LayerNorm": "ffn_norm",
}
_LAYER_RE = re.compile(r"encoder\.layer\.(\d+)\.([\w.]+)\.(weight|bias|gamma|beta)")
_GLOBAL_RE = re.compile(r"([\w.]+)\.(weight|bias|gamma|beta)")
# Old TensorFlow-converted checkpoints name LayerNorm parameters gamma/beta.
_PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}


def bert_config_from_hf(cfg: dict[str, Any]) -> BertConfig:
    if cfg.get("model_type") != "bert":
        raise ValueError(f"not a BERT config (model_type {cfg.get('model_type')!r})")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"unsupported position_embedding_type {cfg['position_embedding_type']!r}")
    act = cfg.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {act!r}")
    return BertConfig(
        vocab_size=int(cfg["vocab_size"]),
        dim=int(cfg["hidden_size"]),
        n_layers=int(cfg["num_hidden_layers"]),
        n_heads=int(cfg["num_attention_heads"]),
        hidden_dim=int(cfg["intermediate_size"]),
        max_position=int(cfg["max_position_embeddings"]),
        n_segments=int(cfg.get("type_vocab_size", 2)),
        norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        activation=_ACTIVATIONS[act],
    )


def _our_name(hf_name: str) -> str | None:
    name = hf_name.removeprefix("bert.")  # BertFor* checkpoints nest the encoder
    if name.startswith(("pooler.", "cls.")) or name.endswith("position_ids"):
        return None  # classifier heads and a derived buffer
    if m := _LAYER_RE.fullmatch(name):
        layer, module, param = m.groups()
        if module in _LAYER_NAMES:
            return f"layers.{layer}.{_LAYER_NAMES[module]}.{_PARAM[param]}"
    elif (m := _GLOBAL_RE.fullmatch(name)) and m.group(1) in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[m.group(1)]}.{_PARAM[m.group(2)]}"
    raise ValueError(f"unexpected tensor {hf_name!r} in BERT checkpoint")


def load_bert(path: Path) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """A BERT directory (``config.json`` + ``model.safetensors``) -> config and our names."""
    config = bert_config_from_hf(json.loads((path / "config.json").read_text()))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{path} has no model.safetensors")
    state_dict: dict[str, torch.Tensor] = {}
    for hf_name, tensor in load_file(weights).items():
        name = _our_name(hf_name)
        if name is not None:
            state_dict[name] = tensor
    return config, state_dict
