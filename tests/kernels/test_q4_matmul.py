"""``levant::q4_matmul`` (C++, AVX-512 VNNI or AVX2) against its arithmetic written out in PyTorch:
activations rounded per row and group of 32 to int8 with one scale (max |x| / 127), the
integer dot product with the 4-bit codes, then d_w * d_x * dot + m_w * d_x * sum(q_x), where
d_w and m_w come from the bf16 scale and zero (w = scale * (q - 8) + zero). And
``Int4Linear``'s quantized step, which uses it, against x @ dequantized(W).T.
"""

from __future__ import annotations

import pytest
import torch

from levant import kernels
from levant.models.quantize import GROUP_SIZE, Int4Linear, pack_q4

# The op exists in every build (without either it computes the same in plain loops, which
# this checks too); Int4Linear uses it only where q4_ready().
pytestmark = pytest.mark.skipif(not kernels.load(), reason="no C++ compiler: kernels are off")


def written_out(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor):  # type: ignore[no-untyped-def]
    M, K = x.shape
    d = scale.to(torch.bfloat16).double()
    m = zero.to(torch.bfloat16).double() - 8 * d  # the kernel reads bf16 scales and zeros
    xg = x.double().view(M, K // GROUP_SIZE, GROUP_SIZE)
    dx = xg.abs().amax(-1) / 127  # (M, G)
    qx = torch.where(dx[..., None] > 0, xg / dx[..., None], 0).round().clamp(-127, 127)
    cg = codes.double().view(codes.shape[0], K // GROUP_SIZE, GROUP_SIZE)  # (N, G, 32)
    dots = torch.einsum("mgk,ngk->mng", qx, cg)  # exact integers
    y = d[None] * dx[:, None] * dots + m[None] * (dx * qx.sum(-1))[:, None]
    return y.sum(-1)  # (M, N)


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 16, 32), (3, 48, 96), (8, 32, 64), (13, 64, 576)])
def test_matches_the_arithmetic_written_out(rows: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(rows * 100 + n)
    codes = torch.randint(0, 16, (n, k), generator=g)
    d = torch.rand(n, k // GROUP_SIZE, generator=g) * 0.1  # scales
    m = -torch.rand(n, k // GROUP_SIZE, generator=g)  # zeros (the value at q = 8)
    x = torch.randn(rows, k, generator=g)
    x[0, :GROUP_SIZE] = 0  # a group of zeros: scale 0, contributes nothing
    packed, scales = pack_q4(codes, d, m)
    got = torch.ops.levant.q4_matmul(x, packed, scales)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    expected = written_out(x, codes, d, m).float()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4 * expected.abs().max().item())


@pytest.mark.skipif(not kernels.q4_ready(), reason="neither AVX2 nor AVX-512 VNNI here")
def test_int4_linear_quantized_step_is_close_to_the_dequantized_matmul() -> None:
    g = torch.Generator().manual_seed(5)
    layer = Int4Linear(torch.randn(96, 128, generator=g) * 0.02)
    assert layer.q4_packed is not None and layer.q4_scales is not None
    x = torch.randn(6, 128, generator=g)
    expected = x @ layer.dequantized().T
    got = layer._quantized_mm(x)
    # int8 activations: about 0.5% relative error, as bf16 activations give about 0.3%
    assert ((got - expected).norm() / expected.norm()).item() < 0.015


def test_bad_shapes_are_refused() -> None:
    packed, scales = pack_q4(
        torch.zeros(16, 64, dtype=torch.long), torch.ones(16, 2), torch.zeros(16, 2)
    )
    op = torch.ops.levant.q4_matmul
    with pytest.raises(RuntimeError, match="K does not match"):
        op(torch.zeros(2, 32), packed, scales)
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.zeros(2, 64, dtype=torch.bfloat16), packed, scales)
    assert op(torch.zeros(0, 64), packed, scales).shape == (0, 16)
