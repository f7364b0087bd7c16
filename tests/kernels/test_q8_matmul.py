"""``levant::q8_matmul`` (C++, AVX-512 VNNI or AVX2) against its arithmetic written out in PyTorch:
activations rounded per row and group of 32 to int8 with one scale (max |x| / 127), the
integer dot product with the int8 weights, times both scales. And ``Int8Linear``'s
quantized step, which uses it, against x @ dequantized(W).T and against PyTorch's own int8
kernel (bf16 activations).
"""

from __future__ import annotations

import pytest
import torch

from levant import kernels
from levant.models.quantize import GROUP_SIZE, Int8Linear, pack_q8

# The op exists in every build (without either it computes the same in plain loops, which
# this checks too); Int8Linear uses it only where q4_ready().
pytestmark = pytest.mark.skipif(not kernels.load(), reason="no C++ compiler: kernels are off")


def written_out(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    M, K = x.shape
    xg = x.double().view(M, K // GROUP_SIZE, GROUP_SIZE)
    dx = xg.abs().amax(-1) / 127  # (M, G)
    qx = torch.where(dx[..., None] > 0, xg / dx[..., None], 0).round().clamp(-127, 127)
    wg = w.double().view(w.shape[0], K // GROUP_SIZE, GROUP_SIZE)  # (N, G, 32)
    dots = torch.einsum("mgk,ngk->mng", qx, wg)  # exact integers
    return (dots * dx[:, None]).sum(-1) * s.double()[None]  # (M, N)


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 16, 32), (3, 48, 96), (5, 32, 64), (9, 64, 576)])
def test_matches_the_arithmetic_written_out(rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 100 + n)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    w[0, :4] = torch.tensor([-127, 127, 0, 1], dtype=torch.int8)  # the extremes, and 0
    s = torch.rand(n, generator=g) * 0.01
    x = torch.randn(rows, k, generator=g)
    x[0, :GROUP_SIZE] = 0  # a group of zeros: scale 0, contributes nothing
    got = torch.ops.levant.q8_matmul(x, pack_q8(w), s)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    expected = written_out(x, w, s).float()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4 * expected.abs().max().item())


@pytest.mark.skipif(not kernels.q4_ready(), reason="neither AVX2 nor AVX-512 VNNI here")
def test_int8_linear_quantized_step_is_close_to_pytorchs_kernel() -> None:
    g = torch.Generator().manual_seed(5)
    layer = Int8Linear(torch.randn(96, 128, generator=g) * 0.02)
    assert layer.q8_packed is not None and layer.q8_scales is not None
    x = torch.randn(3, 128, generator=g)
    expected = x @ (layer.weight.float() * layer.scales.float()[:, None]).T
    got = layer._quantized_mm(x)
    theirs = torch.ops.aten._weight_int8pack_mm(x.bfloat16(), layer.weight, layer.scales).float()
    # int8 activations: about 0.5% relative error, as bf16 activations give about 0.3%
    assert ((got - expected).norm() / expected.norm()).item() < 0.015
    assert ((theirs - expected).norm() / expected.norm()).item() < 0.015


def test_bad_shapes_are_refused() -> None:
    packed, scales = pack_q8(torch.zeros(16, 64, dtype=torch.int8)), torch.ones(16)
    op = torch.ops.levant.q8_matmul
    with pytest.raises(RuntimeError, match="K does not match"):
        op(torch.zeros(2, 32), packed, scales)
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.zeros(2, 64, dtype=torch.bfloat16), packed, scales)
    with pytest.raises(RuntimeError, match="scales"):
        op(torch.zeros(2, 64), packed, torch.ones(8))
    assert op(torch.zeros(0, 64), packed, scales).shape == (0, 16)
