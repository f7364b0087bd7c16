"""A bf16 weight matrix prepacked once for oneDNN: the dense half of a quantized linear.

``torch.nn.functional.linear`` on bf16 tensors goes through oneDNN too, but reorders the
weight into the kernel's blocked layout on every call; for the small matrices of a decode
step that reorder costs as much as the multiply. ``PackedBF16`` reorders once, at load
(``torch.ops.mkldnn._reorder_linear_weight``, the packing Inductor's freezing pass uses),
and multiplies with ``torch.ops.mkldnn._linear_pointwise``: AMX or AVX512-BF16 where the
CPU has them. Where PyTorch has no oneDNN bf16 path it keeps the plain matrix and calls
``F.linear``: the same arithmetic, slower.

Boundary: ``(M, in)`` bf16 in, ``(M, out)`` bf16 out; no quantization, no dtype policy.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

PACK_FOR_ROWS = 16  # the row count oneDNN chooses the packed layout for (any M runs)


@functools.cache
def onednn_bf16() -> bool:
    """Whether this PyTorch and CPU run oneDNN's bf16 matmul."""
    available = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(available and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedBF16:
    """``x @ W.T`` for a fixed bf16 ``W`` (out, in), packed once for oneDNN."""

    def __init__(self, weight: torch.Tensor) -> None:
        w = weight.detach().to(torch.bfloat16).contiguous()
        self.out_features, self.in_features = w.shape
        self.packed = onednn_bf16()
        # An opaque oneDNN tensor when packed (usable only by oneDNN ops), else the matrix.
        self.weight = (
            torch.ops.mkldnn._reorder_linear_weight(w, PACK_FOR_ROWS) if self.packed else w
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, in) bf16 -> (M, out) bf16."""
        if not self.packed:
            return F.linear(x, self.weight)
        if torch.compiler.is_compiling():  # Inductor cannot lower the oneDNN op itself
            y: torch.Tensor = packed_linear(x, self.weight)
            return y
        return _packed_linear(x, self.weight)

    def nbytes(self) -> int:
        return self.out_features * self.in_features * 2


def _packed_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    y: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
        x.contiguous(), weight, None, "none", [], ""
    )
    return y


@torch.library.custom_op("levant::packed_bf16_linear", mutates_args=())
def packed_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The oneDNN matmul as an opaque op, which a compiled graph calls as it is."""
    return _packed_linear(x, weight)


@packed_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])
