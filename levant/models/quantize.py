"""Weight-only int8 quantization, applied to a built model from outside (as gpt-fast does).

Every ``nn.Linear`` in the blocks, and the output head (the embedding matrix when tied),
becomes an ``Int8Linear``: symmetric per-output-channel int8 weights with one scale per
row. The matmul is PyTorch's CPU kernel ``_weight_int8pack_mm``, fed bf16 activations
(its fast path); everything else (norms, rotary, attention, the KV cache) stays in the
model's dtype. The model file never knows.

That kernel reads the weights once per call, which is what a decode step of a few
tokens needs (it is bandwidth bound), but it does not get faster per token as the
batch grows. For steps of more than ``DENSE_ABOVE`` rows (a prefill chunk, a large
decode batch) each layer also keeps the same quantized weights dequantized to bf16
and uses the dense bf16 matmul (AVX512-BF16/AMX where the CPU has them): about three
times the int8 kernel's speed at 64 rows here, for 2 more bytes per weight.
"""

from __future__ import annotations

import torch
from torch import nn

from levant.models.transformer import Transformer

DENSE_ABOVE = 16  # rows per call above which the dense bf16 copy is used


class Int8Linear(nn.Module):
    weight: torch.Tensor
    scales: torch.Tensor
    dense: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, *, dense: bool = True) -> None:
        super().__init__()
        w = weight.detach().float()  # (out, in)
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.register_buffer("weight", q)  # (out, in) int8
        self.register_buffer("scales", scales.to(torch.bfloat16))  # (out,)
        # The same quantized values, dequantized, for large steps (None: int8 only).
        deq = (q.float() * self.scales.float()[:, None]).to(torch.bfloat16) if dense else None
        self.register_buffer("dense", deq)  # (out, in) bf16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, in)
        if self.dense is not None and x2.shape[0] > DENSE_ABOVE:
            y = torch.nn.functional.linear(x2, self.dense)
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight, self.scales)  # (M, out)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(
    model: Transformer, *, output_head: bool = True, dense: bool = True
) -> Transformer:
    """Replace the model's linear layers in place (and return it); ``dense=False`` keeps
    no bf16 copy (a third of the memory, slower prefill and large batches)."""
    for module in list(model.layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child.weight, dense=dense))
    if output_head:
        head = model.tok_embeddings.weight if model.output is None else model.output.weight
        # A tied head gets its own int8 copy; the embedding lookup keeps the float matrix.
        model.output = Int8Linear(head, dense=dense)  # type: ignore[assignment]
    return model
