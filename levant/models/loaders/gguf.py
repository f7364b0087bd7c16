"""Load a llama-architecture GGUF file into a ModelConfig and a state dict in our names.

Boundary: reads the file (memory-mapped) with ``gguf.GGUFReader`` and dequantizes with
``gguf_quants``; tokenizer metadata is left to ``levant.models.tokenizers``. llama.cpp
stores q/k in the interleaved rotary layout our model uses, so no permutation is needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader

from levant.models.config import ModelConfig, RopeScaling
from levant.models.loaders.gguf_quants import dequantize
from levant.models.transformer import rope_frequencies

_GLOBAL_NAMES = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
}
_LAYER_NAMES = {
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_ROPE_FREQS = "rope_freqs.weight"


def _field(reader: GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _our_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _LAYER_RE.fullmatch(gguf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise ValueError(f"unexpected tensor {gguf_name!r} in llama GGUF")
    return f"layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"


def _rope_scaling(
    reader: GGUFReader, head_dim: int, theta: float, rope_freqs: np.ndarray | None
) -> RopeScaling | None:
    kind = _field(reader, "llama.rope.scaling.type")
    if kind == "linear":
        return RopeScaling("linear", factor=float(_field(reader, "llama.rope.scaling.factor")))
    if kind not in (None, "none"):
        raise ValueError(f"unsupported GGUF rope scaling type {kind!r}")
    if rope_freqs is None:
        return None
    # Llama 3.1 GGUFs carry per-frequency divisors (rope_freqs.weight) instead of the
    # scaling parameters. Recover the parameters (Meta's defaults, factor = the largest
    # divisor) and insist they reproduce the stored divisors exactly enough.
    original = _field(reader, "llama.rope.scaling.original_context_length") or 8192
    scaling = RopeScaling(
        "llama3", factor=float(rope_freqs.max()), original_max_position=int(original)
    )
    plain = rope_frequencies(head_dim, theta, None)
    ours = plain / rope_frequencies(head_dim, theta, scaling)
    if not torch.allclose(ours, torch.from_numpy(rope_freqs.astype(np.float32)), rtol=1e-4):
        raise ValueError("rope_freqs.weight does not match Llama-3 rope scaling")
    return scaling


def load_gguf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    reader = GGUFReader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"unsupported GGUF architecture {arch!r} (only 'llama')")

    def meta(key: str, default: Any = None) -> Any:
        value = _field(reader, f"llama.{key}")
        if value is None and default is None:
            raise ValueError(f"GGUF {path} lacks llama.{key}")
        return default if value is None else value

    tensors = {t.name: t for t in reader.tensors}
    dim = int(meta("embedding_length"))
    n_heads = int(meta("attention.head_count"))
    head_dim = int(
        _field(reader, "llama.attention.key_length")
        or _field(reader, "llama.rope.dimension_count")
        or dim // n_heads
    )
    theta = float(meta("rope.freq_base", 10000.0))
    embd = tensors["token_embd.weight"]
    vocab_size = int(embd.shape[-1])  # ggml order: (dim, vocab)

    state_dict: dict[str, torch.Tensor] = {}
    rope_freqs: np.ndarray | None = None
    for name, t in tensors.items():
        shape = tuple(int(n) for n in reversed(t.shape))  # ggml lists the fastest axis first
        values = dequantize(t.data, t.tensor_type, shape)
        if name == _ROPE_FREQS:
            rope_freqs = values
            continue
        state_dict[_our_name(name)] = torch.from_numpy(values)

    config = ModelConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=int(meta("block_count")),
        n_heads=n_heads,
        n_kv_heads=int(meta("attention.head_count_kv", n_heads)),
        hidden_dim=int(meta("feed_forward_length")),
        head_dim=head_dim,
        norm_eps=float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=theta,
        rope_scaling=_rope_scaling(reader, head_dim, theta, rope_freqs),
        max_position=int(meta("context_length", 4096)),
        tie_embeddings="output.weight" not in tensors,
    )
    return config, state_dict
