"""FusedDecode: a decode step's decoder layers in one call to ``levant::decode_step``.

Boundary: R token ids, their positions and a ``DecodeAttention`` in, final-normed hidden
states (1, R, dim) out: the contract of ``CompiledDecode``. It applies to a model whose
every block linear runs one of Levant's quantized kernels (``Int4Linear`` with its q4
packing, ``Int8Linear`` with its q8 packing: int4 or int8 weights on a CPU with AVX2 or
AVX-512 VNNI) over float32 activations; ``of`` returns None for any other. The runner
uses it for decode steps of up to ``max_rows`` sequences: past the row count where a
layer's tuned switch (``dense_above``) prefers its dense bf16 copy, the compiled or eager
step runs instead.

Why: a compiled step of a small model on a CPU spends as much time between its kernels as
in them (a Python call, a dispatch and an allocation for each norm, rotary, SwiGLU and
residual); ``decode_step`` runs those as loops in C++ between the same matmul and
attention kernels, and needs no compilation at start-up.
"""

from __future__ import annotations

import torch
from torch import nn

from levant import kernels
from levant.models.paged_attention import DecodeAttention
from levant.models.quantize import Int4Linear, Int8Linear, quantized_layers
from levant.models.transformer import Transformer, TransformerBlock, rotary_table


def _packed(layer: nn.Module | None) -> list[torch.Tensor] | None:
    """A linear's packed weights and scales for decode_step, None if it has none."""
    if isinstance(layer, Int4Linear) and layer.q4_packed is not None:
        assert layer.q4_scales is not None
        return [layer.q4_packed, layer.q4_scales]
    if isinstance(layer, Int8Linear) and layer.q8_packed is not None:
        assert layer.q8_scales is not None
        return [layer.q8_packed, layer.q8_scales]
    return None


class FusedDecode:
    def __init__(self, model: Transformer, weights: list[torch.Tensor], max_seqs: int) -> None:
        self.model = model
        self.weights = weights
        self.max_seqs = max_seqs
        self.eps = model.config.norm_eps
        self.n_heads = model.config.n_heads
        self.max_rows = self._max_rows()

    @classmethod
    def of(cls, model: Transformer, max_seqs: int = 64) -> FusedDecode | None:
        """The fused step for ``model``, or None where it does not apply."""
        if not kernels.q4_ready() or model.tok_embeddings.weight.dtype != torch.float32:
            return None
        weights: list[torch.Tensor] = []
        for block in model.layers:
            assert isinstance(block, TransformerBlock)
            attention, ffn = block.attention, block.feed_forward
            linears = [_packed(m) for m in (attention.wqkv, attention.wo, ffn.w13, ffn.w2)]
            norms = [block.attention_norm.weight, block.ffn_norm.weight]
            if any(p is None for p in linears) or any(n.dtype != torch.float32 for n in norms):
                return None
            qkv, wo, w13, w2 = (p for p in linears if p is not None)
            weights += [norms[0], *qkv, *wo, norms[1], *w13, *w2]
        if model.norm.weight.dtype != torch.float32:
            return None
        weights.append(model.norm.weight)
        return cls(model, weights, max_seqs)

    def _max_rows(self) -> int:
        """Rows up to which every layer runs its quantized kernel (``dense_above``)."""
        limits = [m.dense_above for m in quantized_layers(self.model.layers) if m.dense is not None]
        return min([self.max_seqs, *limits])

    def refresh(self) -> None:
        """Re-read the layers' kernel switches (after ``tune_dense_above``)."""
        self.max_rows = self._max_rows()

    def covers(self, rows: int) -> bool:
        return 0 < rows <= self.max_rows

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: DecodeAttention
    ) -> torch.Tensor:
        """tokens and positions (R,) -> final-normed hidden states (1, R, dim). Called under
        the runner's inference mode (the op writes the cache in place)."""
        R = tokens.shape[0]
        if tokens.dim() != 1 or not self.covers(R):
            raise ValueError(f"the fused step decodes 1 to {self.max_rows} sequences")
        rope = rotary_table(positions, self.model.inv_freq)  # (R, head_dim // 2, 2)
        h = self.model.tok_embeddings(tokens)  # (R, dim) float32
        cache = attend.cache
        out: torch.Tensor = torch.ops.levant.decode_step(
            h,
            rope,
            self.weights,
            cache.kv,
            attend.slot_mapping,
            attend.kv_blocks.view(R, -1),
            attend.bounds,
            cache.block_size,
            self.n_heads,
            self.eps,
        )
        return out[None]
