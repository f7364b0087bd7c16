"""A decoder-only transformer for the Llama / Mistral family, with a KV cache.

Boundary: token ids and absolute positions in, float32 logits out. No sampling,
batching policy, tokenization or file formats here (loaders produce our names).
Where keys and values live, and who may attend to whom, is an ``AttentionBackend``:
``CausalAttention`` over the contiguous ``KVCache`` below, or the engine's paged
cache (``levant.models.paged_attention``), which the model never sees directly.

``build_model`` fuses the q/k/v projections into one ``wqkv`` and the gate/up
projections into one ``w13`` after loading (one matmul instead of three, or two):
the checkpoint names stay Mistral's, the arithmetic per output is unchanged.

Parameter names are Mistral's consolidated names (``tok_embeddings``,
``layers.{i}.attention.wq``, ``feed_forward.w1`` ...). Rotary layout: the
Meta / Mistral-consolidated *interleaved pairs* layout, i.e. within each head the
rotated pairs are dimensions ``(0, 1), (2, 3), ...``. GGUF and consolidated
checkpoints are stored that way already; HF safetensors store q/k permuted to a
half-split layout, which ``loaders.hf`` undoes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from levant.models.config import ModelConfig, RopeScaling


@dataclass
class KVCache:
    """Contiguous per-layer key/value cache: position ``p`` lives in slot ``p``."""

    keys: list[torch.Tensor]  # n_layers x (B, n_kv_heads, max_len, head_dim)
    values: list[torch.Tensor]  # n_layers x (B, n_kv_heads, max_len, head_dim)

    @classmethod
    def allocate(
        cls,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> KVCache:
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        return cls(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)],
        )

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def update(
        self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, n_kv_heads, T, head_dim) at start_pos; return all keys/values so far."""
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.keys[layer][:, :, start_pos:end] = k
        self.values[layer][:, :, start_pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> torch.Tensor:
    """Inverse frequencies (head_dim // 2,) float32, with optional Llama-3 / linear scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    if scaling.rope_type != "llama3":
        raise ValueError(f"unsupported rope scaling type {scaling.rope_type!r}")
    # Llama 3.1: keep high frequencies, divide low frequencies by `factor`, and
    # interpolate smoothly in between (wavelengths measured against the original context).
    low_freq_wavelen = scaling.original_max_position / scaling.low_freq_factor
    high_freq_wavelen = scaling.original_max_position / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rotary_table(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """(T,) positions -> (T, head_dim // 2, 2) float32: cos and sin of each pair's angle."""
    angles = torch.outer(positions.float(), inv_freq)  # (T, head_dim // 2)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rotary_emb(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs: x (B, T, n_heads, head_dim), rope (T, head_dim // 2, 2).

    Each pair (x[2i], x[2i+1]) is the complex number x[2i] + j x[2i+1], multiplied by
    e^(j * angle), written out in real arithmetic (which ``torch.compile`` can fuse).
    """
    pairs = x.float().view(*x.shape[:-1], -1, 2)  # (B, T, h, hd // 2, 2)
    re, im = pairs.unbind(-1)
    cos, sin = rope[None, :, None].unbind(-1)  # (1, T, 1, hd // 2) each
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
    return out.flatten(-2).type_as(x)


def attention_mask(
    start_pos: int, seq_len: int, sliding_window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean (T, start_pos + T) mask, True where a query may attend.

    Query at position q sees key k iff k <= q and q - k < sliding_window (itself included).
    None when plain causal attention is exact: a single query that sees the whole cache, or a
    prefill from position 0 (SDPA's ``is_causal``) with the window not yet binding.
    """
    kv_len = start_pos + seq_len
    if (sliding_window is None or kv_len <= sliding_window) and (seq_len == 1 or start_pos == 0):
        return None
    q_pos = torch.arange(start_pos, kv_len, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(kv_len, device=device)[None, :]  # (1, start_pos + T)
    mask = k_pos <= q_pos
    if sliding_window is not None:
        mask &= q_pos - k_pos < sliding_window
    return mask


class AttentionBackend(Protocol):
    """Stores this step's keys/values and attends: the model projects and rotates, nothing more."""

    def __call__(self, layer: int, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """q (B, T, n_heads, hd), kv (B, T, 2 * n_kv_heads, hd): the keys' heads, then the
        values' -> (B, T, n_heads, hd)."""
        ...


@dataclass
class CausalAttention:
    """Causal (optionally windowed) attention for B sequences at the same positions.

    With a ``KVCache`` the new keys/values are written at ``start_pos`` and attention covers
    everything cached so far; without one it is a plain full-sequence forward.
    """

    cache: KVCache | None
    start_pos: int
    mask: torch.Tensor | None  # (T, start_pos + T) from attention_mask(), None: plain causal

    def __call__(self, layer: int, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        k, v = kv.chunk(2, dim=2)  # (B, T, n_kv_heads, head_dim) each
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, head_dim)
        if self.cache is not None:  # k, v become (B, n_kv_heads, start_pos + T, head_dim)
            k, v = self.cache.update(layer, self.start_pos, k, v)
        # No mask: either one query attending to everything, or a causal prefill from 0.
        is_causal = self.mask is None and q.shape[2] > 1
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.mask, is_causal=is_causal, enable_gqa=q.shape[1] != k.shape[1]
        )  # (B, n_heads, T, head_dim)
        return out.transpose(1, 2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused kernel, the same arithmetic
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Normalise in float32 whatever the model dtype, then scale in the model dtype.
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.type_as(x)


def _fuse(linears: list[nn.Module]) -> nn.Linear:
    """One bias-free linear whose output rows are the given linears' rows, in order."""
    weight = torch.cat([m.weight for m in linears])  # type: ignore[misc]
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=False)
    return fused


class Attention(nn.Module):
    wq: nn.Module
    wk: nn.Module
    wv: nn.Module
    wqkv: nn.Module | None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=False)
        self.wqkv = None

    def fuse(self) -> None:
        """Replace wq, wk, wv by one ``wqkv`` (rows: queries, keys, values)."""
        self.wqkv = _fuse([self.wq, self.wk, self.wv])
        del self.wq, self.wk, self.wv

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) -> (B, T, n_heads + 2 * n_kv_heads, head_dim): queries, keys, values."""
        B, T, _ = x.shape
        if self.wqkv is not None:
            out: torch.Tensor = self.wqkv(x)
        else:
            out = torch.cat([self.wq(x), self.wk(x), self.wv(x)], dim=-1)
        return out.view(B, T, -1, self.head_dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        attend: AttentionBackend,
        layer: int,
    ) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, dim)
        qkv = self.qkv(x)
        # Queries and keys are rotated together (one fused rotation), in place.
        qk = qkv[:, :, : self.n_heads + self.n_kv_heads]
        qk.copy_(apply_rotary_emb(qk, rope))
        q, kv = qkv[:, :, : self.n_heads], qkv[:, :, self.n_heads :]
        out = attend(layer, q, kv)  # (B, T, n_heads, head_dim)
        y: torch.Tensor = self.wo(out.reshape(B, T, self.n_heads * self.head_dim))
        return y  # (B, T, dim)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is the gate, w3 the up projection, w2 the down."""

    w1: nn.Module
    w3: nn.Module
    w13: nn.Module | None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.w2 = nn.Linear(config.hidden_dim, config.dim, bias=False)
        self.w3 = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.w13 = None

    def fuse(self) -> None:
        """Replace w1 and w3 by one ``w13`` (rows: gate, then up)."""
        self.w13 = _fuse([self.w1, self.w3])
        del self.w1, self.w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is None:
            gate, up = self.w1(x), self.w3(x)
        else:
            gate, up = self.w13(x).chunk(2, dim=-1)
        y: torch.Tensor = self.w2(F.silu(gate) * up)
        return y


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        attend: AttentionBackend,
    ) -> torch.Tensor:
        h: torch.Tensor = x + self.attention(self.attention_norm(x), rope, attend, self.layer)
        out: torch.Tensor = h + self.feed_forward(self.ffn_norm(h))
        return out


class Transformer(nn.Module):
    inv_freq: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        # With tied embeddings there is no `output` parameter: logits use tok_embeddings.weight.
        self.output = (
            None if config.tie_embeddings else nn.Linear(config.dim, config.vocab_size, bias=False)
        )
        # Derived from the config, not stored in checkpoints; kept float32 whatever the dtype.
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        c = self.config
        return rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)

    def reset_rope(self, device: torch.device) -> None:
        """Recompute the float32 rotary frequencies on ``device`` (after meta-device init)."""
        self.inv_freq = self._inv_freq().to(device)

    def forward(
        self, tokens: torch.Tensor, start_pos: int, cache: KVCache | None = None
    ) -> torch.Tensor:
        """tokens (B, T) int64 at absolute positions start_pos..start_pos+T-1.

        With a cache, keys/values are written at those positions and attention covers
        positions [0, start_pos+T) (minus the sliding window); without a cache, start_pos
        must be 0 and it's a plain full-sequence forward. Returns logits (B, T, vocab) in
        float32.
        """
        if cache is None and start_pos != 0:
            raise ValueError("start_pos must be 0 without a KV cache")
        _, T = tokens.shape
        positions = torch.arange(start_pos, start_pos + T, device=tokens.device)
        mask = attention_mask(start_pos, T, self.config.sliding_window, tokens.device)
        return self.logits(
            self.hidden_states(tokens, positions, CausalAttention(cache, start_pos, mask))
        )

    def hidden_states(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: AttentionBackend
    ) -> torch.Tensor:
        """tokens (B, T) at positions (T,) -> final-normed hidden states (B, T, dim).

        The positions need not be contiguous: a flattened batch of several sequences is
        B = 1 with each token at its own position, and ``attend`` knows the sequences.
        """
        rope = rotary_table(positions, self.inv_freq)  # (T, head_dim // 2, 2)
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        for layer in self.layers:
            h = layer(h, rope, attend)
        out: torch.Tensor = self.norm(h)
        return out

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., dim) hidden states -> (..., vocab) float32 logits."""
        if self.output is None:  # tied: the embedding matrix is the output head
            return F.linear(h, self.tok_embeddings.weight).float()
        out: torch.Tensor = self.output(h)
        return out.float()


def build_model(
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    fuse: bool = True,
) -> Transformer:
    """Instantiate without allocating random weights, load ``state_dict`` strictly, eval mode;
    then fuse the q/k/v and gate/up projections (``fuse=False`` keeps them apart)."""
    device = torch.device(device)
    with torch.device("meta"):
        model = Transformer(config)
    weights = {name: t.to(device=device, dtype=dtype) for name, t in state_dict.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    if fuse:
        for block in model.layers:
            assert isinstance(block, TransformerBlock)
            block.attention.fuse()
            block.feed_forward.fuse()
    model.reset_rope(device)
    model.requires_grad_(False)
    return model.eval()
