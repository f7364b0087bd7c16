"""Weight-only int8: both kernels (int8 for small steps, the dense bf16 copy for large ones)
compute x @ dequantize(W).T, and the real SmolLM2 stays close to its float32 self.

The reference is plain float32 arithmetic on the dequantized weights (q * scale), written
here, not the module under test; tolerances are bf16's (the activations are cast to bf16).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from levant.models.loaders import load_checkpoint
from levant.models.quantize import DENSE_ABOVE, Int8Linear, quantize_int8
from levant.models.transformer import build_model


def reference(x: torch.Tensor, layer: Int8Linear) -> torch.Tensor:
    w = layer.weight.float() * layer.scales.float()[:, None]  # (out, in)
    return x.to(torch.bfloat16).float() @ w.T


@pytest.mark.parametrize("rows", [1, 3, DENSE_ABOVE, DENSE_ABOVE + 1, 64])
def test_both_kernels_compute_the_dequantized_matmul(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 64, generator=g)
    x = torch.randn(rows, 64, generator=g)
    layer = Int8Linear(weight)
    expected = reference(x, layer)
    atol = 2e-2 * expected.abs().max().item()
    got = layer(x)
    assert got.dtype == torch.float32 and got.shape == (rows, 96)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=atol)
    # int8 only (no dense copy): the same result from the other kernel
    lean = Int8Linear(weight, dense=False)
    assert lean.dense is None
    torch.testing.assert_close(
        lean(x), expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item()
    )


def test_quantization_error_is_bounded_by_half_a_step() -> None:
    weight = torch.randn(32, 48, generator=torch.Generator().manual_seed(0))
    layer = Int8Linear(weight)
    deq = layer.weight.float() * layer.scales.float()[:, None]
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    # bf16 scales add up to 2^-8 relative error on top of the rounding's half step.
    assert ((deq - weight).abs() <= 0.5 * step + weight.abs() * 2**-8 + 1e-6).all()


@pytest.mark.slow
def test_int8_smollm2_agrees_with_float32(smollm2_gguf: Path) -> None:
    config, weights = load_checkpoint(smollm2_gguf)
    fp32 = build_model(config, weights)
    int8 = quantize_int8(build_model(config, weights))
    assert all(not isinstance(m, nn.Linear) for m in int8.layers.modules())
    tokens = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365] * 4])
    with torch.no_grad():
        expected = fp32(tokens, 0)[0]  # (40, vocab): a 40-row step, the dense bf16 path
        got = int8(tokens, 0)[0]
        one = int8(tokens[:, :1], 0)[0]  # a 1-row step, the int8 kernel
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9
    kl = torch.nn.functional.kl_div(
        got.log_softmax(-1), expected.log_softmax(-1), log_target=True, reduction="batchmean"
    )
    assert kl < 0.05
    assert one.argmax(-1).item() == expected[0].argmax(-1).item()
