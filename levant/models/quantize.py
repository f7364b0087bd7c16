"""Weight-only int8 and int4 quantization, applied to a built model from outside (as
gpt-fast does).

``quantize_int8``: every ``nn.Linear`` in the blocks, and the output head (the embedding
matrix when tied), becomes an ``Int8Linear``: symmetric per-output-channel int8 weights
with one scale per row. The matmul is PyTorch's CPU kernel ``_weight_int8pack_mm``, fed
bf16 activations (its fast path); everything else (norms, rotary, attention, the KV
cache) stays in the model's dtype. The model file never knows.

That kernel reads the weights once per call, which is what a decode step of a few
tokens needs (it is bandwidth bound), but it does not get faster per token as the
batch grows. For steps of more than ``DENSE_ABOVE`` rows (a prefill chunk, a large
decode batch) each layer also keeps the same quantized weights dequantized to bf16
and uses the dense bf16 matmul (AVX512-BF16/AMX where the CPU has them): about three
times the int8 kernel's speed at 64 rows here, for 2 more bytes per weight.

``quantize_int4``: the blocks' linears become ``Int4Linear``: asymmetric 4-bit weights in
groups of 32 along the input dimension, one scale and one minimum per group -- the
arithmetic of GGUF's Q4_1, so a Q4_1 checkpoint (dequantized by the loader) comes back to
the same 4-bit codes, up to bf16 rounding of the scales. The kernel is PyTorch's
``_weight_int4pack_mm_for_cpu`` (bf16 activations); it reads half the bytes of int8, which
is what a decode step is bound by, and like int8 it is used for steps of up to
``DENSE_ABOVE`` rows, the dense bf16 copy beyond. The output head stays int8 (GGUF
checkpoints ship it as Q8_0: sampling is sensitive to its precision).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from levant.models.transformer import Transformer

DENSE_ABOVE = 16  # rows per call above which the dense bf16 copy is used
GROUP_SIZE = 32  # int4: input features per scale/minimum, as GGUF's Q4_1


class _WeightOnlyLinear(nn.Module, abc.ABC):
    """Quantized weights for steps of up to ``DENSE_ABOVE`` rows, the dense bf16 copy (when
    kept) beyond; bf16 activations into either, the caller's dtype out."""

    in_features: int
    out_features: int
    dense: torch.Tensor | None

    @abc.abstractmethod
    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        """(M, in) bf16 -> (M, out) with the quantized kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, in)
        if self.dense is not None and x2.shape[0] > DENSE_ABOVE:
            y = torch.nn.functional.linear(x2, self.dense)
        else:
            y = self._quantized_mm(x2)  # (M, out)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


class Int8Linear(_WeightOnlyLinear):
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

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales)
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int4Linear(_WeightOnlyLinear):
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def __init__(
        self, weight: torch.Tensor, *, group_size: int = GROUP_SIZE, dense: bool = True
    ) -> None:
        super().__init__()
        w = weight.detach().float()  # (out, in)
        out, k = w.shape
        if k % group_size:
            raise ValueError(f"int4 needs in_features divisible by {group_size}, got {k}")
        groups = w.view(out, k // group_size, group_size)
        lo, hi = groups.amin(-1), groups.amax(-1)  # (out, in / group)
        scale = ((hi - lo) / 15).clamp(min=1e-10)
        q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15)
        # The kernel dequantizes (q - 8) * scale + zero: zero is the group's value at q = 8.
        sz = torch.stack([scale, lo + 8 * scale], dim=-1).to(torch.bfloat16)  # (out, g, 2)
        self.in_features, self.out_features, self.group_size = k, out, group_size
        codes = q.to(torch.int32).view(out, k)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        self.register_buffer("scales_and_zeros", sz.transpose(0, 1).contiguous())  # (g, out, 2)
        deq = None
        if dense:  # dequantized from the bf16 scales, as the kernel does
            s, z = sz.float().unbind(-1)
            deq = ((q - 8) * s[..., None] + z[..., None]).view(out, k).to(torch.bfloat16)
        self.register_buffer("dense", deq)  # (out, in) bf16

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, self.packed, self.group_size, self.scales_and_zeros
        )
        return y

    def dequantized(self) -> torch.Tensor:
        """(out, in) float32: the weights the int4 kernel multiplies by."""
        s, z = self.scales_and_zeros.float().transpose(0, 1).unbind(-1)  # (out, g) each
        codes = _unpack_int4(self.packed, self.out_features, self.in_features, self.group_size)
        g = self.in_features // self.group_size
        deq = (codes.view(self.out_features, g, -1).float() - 8) * s[..., None] + z[..., None]
        return deq.view(self.out_features, self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4"


def _unpack_int4(packed: torch.Tensor, out: int, k: int, group_size: int) -> torch.Tensor:
    """The 4-bit codes back from the kernel's packing, by multiplying with the identity."""
    eye = torch.eye(k, dtype=torch.bfloat16)
    ones = torch.ones(k // group_size, out, 2, dtype=torch.bfloat16)
    ones[..., 1] = 8.0  # scale 1, zero 8: (q - 8) * 1 + 8 = q
    codes: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, packed, group_size, ones)
    return codes.T.round().to(torch.int32)  # (out, k)


def quantize_int8(
    model: Transformer, *, output_head: bool = True, dense: bool = True
) -> Transformer:
    """Replace the model's linear layers in place (and return it); ``dense=False`` keeps
    no bf16 copy (a third of the memory, slower prefill and large batches)."""
    for module in list(model.layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child.weight, dense=dense))
    if output_head:  # a tied head gets its own copy; the embedding lookup keeps the float matrix
        quantize_int8_head(model, dense=dense)
    return model


def quantize_int4(model: Transformer, *, dense: bool = True) -> Transformer:
    """Replace the blocks' linear layers by ``Int4Linear`` (a layer whose input size is not a
    multiple of the group size gets ``Int8Linear``) and the output head by ``Int8Linear``."""
    for module in list(model.layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                fits = child.in_features % GROUP_SIZE == 0
                kind = Int4Linear if fits else Int8Linear
                setattr(module, name, kind(child.weight, dense=dense))
    quantize_int8_head(model, dense=dense)
    return model


def quantize_int8_head(model: Transformer, *, dense: bool = True) -> None:
    """The output head (its own copy of the embedding matrix when tied) as ``Int8Linear``."""
    head = model.tok_embeddings.weight if model.output is None else model.output.weight
    model.output = Int8Linear(head, dense=dense)  # type: ignore[assignment]
