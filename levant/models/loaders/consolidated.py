"""Load Mistral's consolidated format: ``params.json`` + ``consolidated.safetensors``.

Boundary: the directory in, ``(ModelConfig, state_dict)`` out. The tensor names are
already ours and q/k are already in the interleaved rotary layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from levant.models.config import ModelConfig, RopeScaling

_UNSUPPORTED_PARAMS = ("moe", "yarn", "rope_scaling", "vision_encoder", "lora")
# Meta's Llama 3.1 reference flags its (fixed) scaling with `use_scaled_rope`.
_META_LLAMA3_SCALING = RopeScaling("llama3", factor=8.0)


def _sliding_window(value: Any) -> int | None:
    # Mistral writes an int, a per-layer list, or nothing at all.
    if isinstance(value, list):
        windows = set(value)
        if len(windows) != 1:
            raise ValueError(f"per-layer sliding windows are not supported: {value}")
        value = windows.pop()
    return None if value is None else int(value)


def config_from_params(params: dict[str, Any], *, has_output: bool) -> ModelConfig:
    if unsupported := [k for k in _UNSUPPORTED_PARAMS if params.get(k)]:
        raise ValueError(f"unsupported params.json features: {unsupported}")
    n_heads = int(params["n_heads"])
    max_position = params.get("max_seq_len") or params.get("max_position_embeddings") or 4096
    return ModelConfig(
        vocab_size=int(params["vocab_size"]),
        dim=int(params["dim"]),
        n_layers=int(params["n_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(params.get("n_kv_heads") or n_heads),
        hidden_dim=int(params["hidden_dim"]),
        head_dim=int(params.get("head_dim") or params["dim"] // n_heads),
        norm_eps=float(params.get("norm_eps", 1e-5)),
        rope_theta=float(params.get("rope_theta", 10000.0)),
        rope_scaling=_META_LLAMA3_SCALING if params.get("use_scaled_rope") else None,
        max_position=int(max_position),
        sliding_window=_sliding_window(params.get("sliding_window")),
        tie_embeddings=bool(params.get("tied_embeddings", not has_output)),
    )


def load_consolidated(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    params = json.loads((path / "params.json").read_text())
    state_dict = load_file(path / "consolidated.safetensors")
    config = config_from_params(params, has_output="output.weight" in state_dict)
    if config.tie_embeddings:
        state_dict.pop("output.weight", None)
    return config, state_dict
