"""The architecture hyper-parameters every loader produces and every model reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling; None on ModelConfig means plain RoPE."""

    rope_type: str  # "llama3" | "linear"
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer (Llama / Mistral family): GQA, RoPE, RMSNorm, SwiGLU."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    head_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position: int = 4096
    """Context length the model was trained for: the engine never exceeds it."""
    sliding_window: int | None = None
    """Each token attends to at most this many positions (itself included)."""
    tie_embeddings: bool = False
