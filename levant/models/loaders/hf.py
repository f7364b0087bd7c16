"""Load a Hugging Face Llama / Mistral checkpoint directory into our config and names.

Boundary: ``config.json`` plus ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``) in; ``(ModelConfig, state_dict)`` out. HF stores q/k
permuted to a half-split rotary layout; we undo that permutation here, so the model
only ever sees the interleaved-pairs layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from levant.models.config import ModelConfig, RopeScaling

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")

_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_NAMES = {
    "input_layernorm": "attention_norm",
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.([\w.]+)\.weight")


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of HF's conversion permute: half-split rotary rows -> interleaved pairs.

    HF maps head row ``2i`` to ``i`` and ``2i + 1`` to ``head_dim // 2 + i``; this undoes it.
    """
    out_dim, in_dim = w.shape
    return (
        w.view(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)
    )


def _rope(cfg: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    # transformers >= 5 writes `rope_parameters` (theta inside); older configs write
    # `rope_theta` and `rope_scaling`.
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type == "linear":
        return theta, RopeScaling("linear", factor=float(params["factor"]))
    if rope_type == "llama3":
        return theta, RopeScaling(
            "llama3",
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position=int(params["original_max_position_embeddings"]),
        )
    raise ValueError(f"unsupported rope scaling type {rope_type!r}")


def config_from_hf(cfg: dict[str, Any]) -> ModelConfig:
    archs = cfg.get("architectures") or []
    if not any(a in ARCHITECTURES for a in archs):
        raise ValueError(f"unsupported architectures {archs}; expected one of {ARCHITECTURES}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported activation {cfg['hidden_act']!r}")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ValueError("checkpoints with attention or MLP biases are not supported")
    n_heads = int(cfg["num_attention_heads"])
    theta, scaling = _rope(cfg)
    window = cfg.get("sliding_window")
    return ModelConfig(
        vocab_size=int(cfg["vocab_size"]),
        dim=int(cfg["hidden_size"]),
        n_layers=int(cfg["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        hidden_dim=int(cfg["intermediate_size"]),
        head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // n_heads),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position=int(cfg.get("max_position_embeddings", 4096)),
        sliding_window=None if window is None else int(window),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


def _safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(f"{path} has neither model.safetensors nor model.safetensors.index.json")


def _our_name(hf_name: str) -> str | None:
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None  # derived buffer saved by old transformers versions
    m = _LAYER_RE.fullmatch(hf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise ValueError(f"unexpected tensor {hf_name!r} in HF checkpoint")
    return f"layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"


def load_hf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    config = config_from_hf(json.loads((path / "config.json").read_text()))
    state_dict: dict[str, torch.Tensor] = {}
    for file in _safetensors_files(path):
        for hf_name, tensor in load_file(file).items():
            name = _our_name(hf_name)
            if name is None or (name == "output.weight" and config.tie_embeddings):
                continue
            if name.endswith("attention.wq.weight"):
                tensor = unpermute_rotary(tensor, config.n_heads)
            elif name.endswith("attention.wk.weight"):
                tensor = unpermute_rotary(tensor, config.n_kv_heads)
            state_dict[name] = tensor
    return config, state_dict
