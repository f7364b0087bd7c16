"""FusedStep: an engine step's decoder layers in one call to ``levant::fused_step``.

Boundary: the step's T token ids and positions and where each sequence's rows, positions
and blocks are in, final-normed hidden states (1, T, dim) out: what
``Transformer.hidden_states`` gives over a ``PagedAttention`` for the same step. Any mix of
sequences decoding one token and prefill chunks. It applies to a model whose every block
linear runs one of Levant's quantized kernels (``Int4Linear`` with its q4 packing,
``Int8Linear`` with its q8 packing: int4 or int8 weights on a CPU with AVX2 or AVX-512
VNNI) over float32 activations; ``of`` returns None for any other. It runs steps of any
size: past the row count where a layer's tuned switch (``dense_above``) prefers the
layer's dense bf16 copy, the op multiplies by that copy (oneDNN's matmul, called from C++)
as the layer's own forward does.

Why: a step of a small model run op by op on a CPU spends as much time between its
kernels as in them (a Python call, a dispatch and an allocation for each norm, rotary,
SwiGLU and residual, and for a prefill chunk several passes over its activations);
``fused_step`` runs those as loops in C++ between the same matmul and attention kernels,
and needs no compilation at start-up.
"""

from __future__ import annotations

import torch
from torch import nn

from levant import kernels
from levant.models.paged_attention import PagedKVCache, SequenceChunk
from levant.models.quantize import UNLIMITED, Int4Linear, Int8Linear
from levant.models.transformer import Transformer, TransformerBlock, rotary_table


def _packed(layer: nn.Module | None) -> list[torch.Tensor] | None:
    """A linear's packed weights and scales for fused_step, None if it has none."""
    if isinstance(layer, Int4Linear) and layer.q4_packed is not None:
        assert layer.q4_scales is not None
        return [layer.q4_packed, layer.q4_scales]
    if isinstance(layer, Int8Linear) and layer.q8_packed is not None:
        assert layer.q8_scales is not None
        return [layer.q8_packed, layer.q8_scales]
    return None


def block_linears(model: Transformer) -> list[nn.Module | None]:
    """wqkv, wo, w13 and w2 of each block, in the op's order (None where a block has no
    fused projection)."""
    out: list[nn.Module | None] = []
    for block in model.layers:
        assert isinstance(block, TransformerBlock)
        attention, ffn = block.attention, block.feed_forward
        out += [attention.wqkv, attention.wo, ffn.w13, ffn.w2]
    return out


class FusedStep:
    def __init__(self, model: Transformer, weights: list[torch.Tensor]) -> None:
        self.model = model
        self.weights = weights
        self.eps = model.config.norm_eps
        self.n_heads = model.config.n_heads
        self.window = model.config.sliding_window or 0
        self.dense: list[torch.Tensor] = []
        self.dense_above: list[int] = []
        self.refresh()

    @classmethod
    def of(cls, model: Transformer) -> FusedStep | None:
        """The fused step for ``model``, or None where it does not apply."""
        if not kernels.q4_ready() or model.tok_embeddings.weight.dtype != torch.float32:
            return None
        weights: list[torch.Tensor] = []
        blocks = block_linears(model)
        for i, block in enumerate(model.layers):
            assert isinstance(block, TransformerBlock)
            linears = [_packed(m) for m in blocks[4 * i : 4 * i + 4]]
            norms = [block.attention_norm.weight, block.ffn_norm.weight]
            if any(p is None for p in linears) or any(n.dtype != torch.float32 for n in norms):
                return None
            qkv, wo, w13, w2 = (p for p in linears if p is not None)
            weights += [norms[0], *qkv, *wo, norms[1], *w13, *w2]
        if model.norm.weight.dtype != torch.float32:
            return None
        weights.append(model.norm.weight)
        return cls(model, weights)

    def refresh(self) -> None:
        """Re-read the layers' dense copies and switches (after ``tune_dense_above``, which
        sets the switches and drops the copies that never win)."""
        none = torch.empty(0, dtype=torch.bfloat16)
        self.dense, self.dense_above = [], []
        for m in block_linears(self.model):
            assert isinstance(m, Int4Linear | Int8Linear)
            self.dense.append(m.dense.weight if m.dense is not None else none)
            self.dense_above.append(m.dense_above if m.dense is not None else UNLIMITED)
        # Rows up to which no layer switches: such steps pass no copies (the op has no
        # tensors to check and dispatch over: SmolLM2 has 120).
        self.first_switch = min(self.dense_above, default=UNLIMITED)

    def __call__(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        chunks: list[SequenceChunk],
        cache: PagedKVCache,
        invariant: bool = False,
    ) -> torch.Tensor:
        """tokens and positions (T,), the step's sequences in row order -> final-normed
        hidden states (1, T, dim). Called under the runner's inference mode (the op writes
        the cache in place). ``invariant``: the quantized kernels at every row count, so
        each row's arithmetic does not depend on the rest of the step (no dense copies)."""
        T = tokens.shape[0]
        if tokens.dim() != 1 or T == 0:
            raise ValueError("the fused step runs a (T,) tensor of at least one token")
        bs = cache.block_size
        n = max(-(-(c.num_cached + c.num_new) // bs) for c in chunks)
        seqs = torch.tensor([[c.start, c.num_new, c.num_cached] for c in chunks])
        # Padding past a table's end is -1: the op refuses a position there.
        tables = torch.tensor([c.block_table[:n] + [-1] * (n - len(c.block_table)) for c in chunks])
        rope = rotary_table(positions, self.model.inv_freq)  # (T, head_dim // 2, 2)
        h = self.model.tok_embeddings(tokens)  # (T, dim) float32
        switches = not invariant and self.first_switch < T
        dense, dense_above = (self.dense, self.dense_above) if switches else ([], [])
        out: torch.Tensor = torch.ops.levant.fused_step(
            h,
            rope,
            self.weights,
            dense,
            dense_above,
            cache.kv,
            seqs,
            tables,
            self.window,
            bs,
            self.n_heads,
            self.eps,
        )
        return out[None]
