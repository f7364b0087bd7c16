"""Weight-only int8 quantization, applied to a built model from outside (as gpt-fast does).

Every ``nn.Linear`` in the blocks, and the output head (the embedding matrix when tied),
becomes an ``Int8Linear``: symmetric per-output-channel int8 weights with one scale per
row. The matmul is PyTorch's CPU kernel ``_weight_int8pack_mm``, fed bf16 activations
(its fast path); everything else (norms, rotary, attention, the KV cache) stays in the
model's dtype. The model file never knows.
"""

from __future__ import annotations

import torch
from torch import nn

from levant.models.transformer import Transformer


class Int8Linear(nn.Module):
    weight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.detach().float()  # (out, in)
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.register_buffer("weight", q)  # (out, in) int8
        self.register_buffer("scales", scales.to(torch.bfloat16))  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, in)
        y: torch.Tensor = torch.ops.aten._weight_int8pack_mm(
            x2, self.weight, self.scales
        )  # (M, out)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: Transformer, *, output_head: bool = True) -> Transformer:
    """Replace the model's linear layers in place (and return it)."""
    for module in list(model.layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child.weight))
    if output_head:
        head = model.tok_embeddings.weight if model.output is None else model.output.weight
        # A tied head gets its own int8 copy; the embedding lookup keeps the float matrix.
        model.output = Int8Linear(head)  # type: ignore[assignment]
    return model
