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
# oneDNN generates a kernel per row count the first time it sees it (SmolLM2's four shapes
# on a 2-core Xeon: 1.5 ms at 28 rows, 8.7 ms at 236, inside whichever step first has
# them), so rows are padded with zeros to a multiple of ROW_STEP (as levant::fused_step's
# dense path does) and ``warm_up`` generates those few counts ahead.
ROW_STEP = 16


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
        m = x.shape[0]
        if m % ROW_STEP:
            x = F.pad(x, (0, 0, 0, ROW_STEP - m % ROW_STEP))
            return _packed_linear(x, self.weight)[:m]
        return _packed_linear(x, self.weight)

    def warm_up(self, max_rows: int, above: int = 0) -> None:
        """Generate oneDNN's kernels for every padded row count past ``above`` up to
        ``max_rows`` (no-op without oneDNN)."""
        if not self.packed:
            return
        first = (above // ROW_STEP + 1) * ROW_STEP
        with torch.inference_mode():
            for m in range(first, max_rows + ROW_STEP, ROW_STEP):
                _packed_linear(torch.zeros(m, self.in_features, dtype=torch.bfloat16), self.weight)

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
