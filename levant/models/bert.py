"""BERT (Devlin et al., 2019): a bidirectional transformer encoder.

Boundary: token ids and a padding mask in, one hidden state per token out. No
pooling, normalisation, tokenization or file formats here: sentence embeddings
are made from these states in ``levant.embeddings``, and ``loaders.bert_hf``
maps checkpoints onto our names.

The encoder is the original Transformer's (Vaswani et al., 2017): post-norm
residual blocks, ``LayerNorm(x + Sublayer(x))``, over the sum of token, learned
absolute position and segment embeddings, with GELU in the feed-forward network.
Every token attends to every other token of its sequence; padding is masked out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Activation = Literal["gelu", "gelu_tanh"]


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    dim: int
    """Hidden size (BERT's H)."""
    n_layers: int
    """Encoder blocks (BERT's L)."""
    n_heads: int
    """Attention heads (BERT's A); ``dim`` must be a multiple."""
    hidden_dim: int
    """Feed-forward inner size (4H in the paper)."""
    max_position: int
    """Learned position embeddings: the longest sequence the model can read."""
    n_segments: int = 2
    """Segment (token type) embeddings: sentence A / sentence B."""
    norm_eps: float = 1e-12
    activation: Activation = "gelu"
    """``gelu`` is the exact erf form; ``gelu_tanh`` its tanh approximation."""

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class Embeddings(nn.Module):
    """Input representation (paper §3, Figure 2): token + position + segment, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.dim)
        self.position = nn.Embedding(config.max_position, config.dim)
        self.segment = nn.Embedding(config.n_segments, config.dim)
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        _, T = tokens.shape  # (B, T)
        positions = torch.arange(T, device=tokens.device)  # (T,)
        x = self.token(tokens) + self.position(positions) + self.segment(segments)
        out: torch.Tensor = self.norm(x)
        return out  # (B, T, dim)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over the whole sequence (no causal mask)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not a multiple of n_heads {config.n_heads}")
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.wq = nn.Linear(config.dim, config.dim)
        self.wk = nn.Linear(config.dim, config.dim)
        self.wv = nn.Linear(config.dim, config.dim)
        self.wo = nn.Linear(config.dim, config.dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, T, dim); keep (B, 1, 1, T) is True for the keys a query may attend to."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        # softmax(q k^T / sqrt(head_dim)) v, padded keys excluded
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, n_heads, T, head_dim)
        y: torch.Tensor = self.wo(out.transpose(1, 2).reshape(B, T, -1))
        return y  # (B, T, dim)


class FeedForward(nn.Module):
    """Position-wise FFN: w2(gelu(w1 x))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.hidden_dim)
        self.w2 = nn.Linear(config.hidden_dim, config.dim)
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.w2(F.gelu(self.w1(x), approximate=self.approximate))
        return y


class EncoderLayer(nn.Module):
    """One post-norm block: h = LN(x + Attention(x)); out = LN(h + FFN(h))."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.feed_forward = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = self.attention_norm(x + self.attention(x, keep))
        out: torch.Tensor = self.ffn_norm(h + self.feed_forward(h))
        return out


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))

    def forward(
        self,
        tokens: torch.Tensor,
        attention_mask: torch.Tensor,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T) int64, attention_mask (B, T) 1 for real tokens and 0 for padding
        -> hidden states (B, T, dim). Padding positions hold values nobody should read."""
        if tokens.shape[1] > self.config.max_position:
            raise ValueError(
                f"{tokens.shape[1]} tokens exceed the {self.config.max_position} positions "
                "this encoder has"
            )
        if segments is None:
            segments = torch.zeros_like(tokens)  # everything is sentence A
        keep = attention_mask.bool()[
            :, None, None, :
        ]  # (B, 1, 1, T): broadcast over heads, queries
        h: torch.Tensor = self.embeddings(tokens, segments)
        for layer in self.layers:
            h = layer(h, keep)
        return h  # (B, T, dim)


def build_bert(
    config: BertConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> BertEncoder:
    """Instantiate without allocating random weights, load ``state_dict`` strictly, eval mode."""
    device = torch.device(device)
    with torch.device("meta"):
        model = BertEncoder(config)
    weights = {name: t.to(device=device, dtype=dtype) for name, t in state_dict.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()
