"""Weight-only int8 and int4: both kernels of each (the quantized one for small steps, the
dense bf16 copy for large ones) compute x @ dequantize(W).T, int4 gives back a GGUF Q4_1
checkpoint's own 4-bit codes, and the real SmolLM2 stays close to its float32 self.

The reference is plain float32 arithmetic on the dequantized weights (q * scale, or Q4_1's
q * d + min), written here, not the module under test; tolerances are bf16's (the
activations are cast to bf16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from torch import nn

from levant.models.dense_linear import ROW_STEP, PackedBF16, onednn_bf16
from levant.models.loaders import load_checkpoint
from levant.models.quantize import (
    DENSE_ABOVE,
    GROUP_SIZE,
    TUNE_ROWS,
    Int4Linear,
    Int8Linear,
    dense_copy_bytes,
    quantize_int4,
    quantize_int8,
    quantized_layers,
    tune_dense_above,
)
from levant.models.transformer import Transformer, build_model


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
    assert_close_to_float32(int8, fp32)


def assert_close_to_float32(quantized: Transformer, fp32: Transformer) -> None:
    """A 40-row step (the dense bf16 path) agrees with float32 on ≥ 90% of argmaxes with
    KL < 0.05, and a 1-row step (the quantized kernel) picks float32's first token."""
    tokens = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365] * 4])
    with torch.no_grad():
        expected = fp32(tokens, 0)[0]  # (40, vocab)
        got = quantized(tokens, 0)[0]
        one = quantized(tokens[:, :1], 0)[0]
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9
    kl = torch.nn.functional.kl_div(
        got.log_softmax(-1), expected.log_softmax(-1), log_target=True, reduction="batchmean"
    )
    assert kl < 0.05
    assert one.argmax(-1).item() == expected[0].argmax(-1).item()


# --- int4 -------------------------------------------------------------------------------


def expected_int4(weight: torch.Tensor, group: int = GROUP_SIZE) -> torch.Tensor:
    """GGUF Q4_1's arithmetic, written out: per group of ``group`` inputs, d = (max - min)
    / 15, q = round((w - min) / d), w' = q * d + min -- with d and the kernel's zero point
    (the value at q = 8) rounded to bf16, as the layer stores them."""
    out, k = weight.shape
    g = weight.float().view(out, k // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    d = (hi - lo) / 15
    q = torch.round((g - lo) / d).clamp(0, 15)
    d16, zero16 = d.bfloat16().float(), (lo + 8 * d).bfloat16().float()
    return ((q - 8) * d16 + zero16).view(out, k)


@pytest.mark.parametrize("rows", [1, 3, DENSE_ABOVE, DENSE_ABOVE + 1, 64])
def test_int4_kernels_compute_the_q4_1_matmul(rows: int) -> None:
    g = torch.Generator().manual_seed(100 + rows)
    weight = torch.randn(96, 128, generator=g)
    x = torch.randn(rows, 128, generator=g)
    layer = Int4Linear(weight)
    deq = expected_int4(weight)
    torch.testing.assert_close(layer.dequantized(), deq, rtol=0, atol=1e-6)
    expected = x.to(torch.bfloat16).float() @ deq.T
    got = layer(x)
    assert got.dtype == torch.float32 and got.shape == (rows, 96)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2 * expected.abs().max().item())


def test_int4_error_is_about_half_a_step() -> None:
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    deq = Int4Linear(weight).dequantized()
    groups = weight.view(32, 2, GROUP_SIZE)
    step = ((groups.amax(-1) - groups.amin(-1)) / 15).repeat_interleave(GROUP_SIZE, 1)
    # bf16 scale and zero add at most 8 * 2^-8 steps plus 2^-8 of the zero's size.
    bound = 0.5 * step + 8 * step * 2**-8 + (weight.abs() + 8 * step) * 2**-8 + 1e-6
    assert ((deq - weight).abs() <= bound).all()
    assert (deq - weight).abs().max() > 0.1 * step.max()  # it did quantize


def test_int4_refuses_a_width_that_is_not_whole_groups() -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        Int4Linear(torch.randn(8, 40))


@pytest.mark.slow
def test_int4_recovers_the_gguf_q4_1_codes_and_agrees_with_float32(smollm2_gguf: Path) -> None:
    config, weights = load_checkpoint(smollm2_gguf)
    fp32 = build_model(config, weights)
    int4 = quantize_int4(build_model(config, weights, fuse=False))
    assert all(not isinstance(m, nn.Linear) for m in int4.layers.modules())
    assert isinstance(int4.output, Int8Linear)
    # The checkpoint's own 4-bit codes for blk.0.ffn_down (Q4_1: f16 d, f16 m, 16 bytes of
    # nibbles per 32 weights, low nibbles first), read here from the raw GGUF bytes.
    tensor = next(t for t in GGUFReader(smollm2_gguf).tensors if t.name == "blk.0.ffn_down.weight")
    assert tensor.tensor_type.name == "Q4_1"
    blocks = np.asarray(tensor.data).reshape(-1, 20)[:, 4:]
    codes = np.concatenate([blocks & 0x0F, blocks >> 4], axis=-1).reshape(576, 1536)
    w2 = int4.layers[0].feed_forward.w2
    assert isinstance(w2, Int4Linear)
    got = torch.round((w2.dequantized() - zeros_of(w2)) / scales_of(w2)) + 8
    assert (got.to(torch.int64).numpy() == codes).all()
    assert_close_to_float32(int4, fp32)


def scales_of(layer: Int4Linear) -> torch.Tensor:
    return layer.scales_and_zeros[..., 0].float().T.repeat_interleave(GROUP_SIZE, 1)


def zeros_of(layer: Int4Linear) -> torch.Tensor:
    return layer.scales_and_zeros[..., 1].float().T.repeat_interleave(GROUP_SIZE, 1)


# --- the dense copy and the kernel choice -------------------------------------------------


@pytest.mark.parametrize("rows", [1, 7, 16, 33])
def test_packed_bf16_is_the_bf16_matmul(rows: int) -> None:
    g = torch.Generator().manual_seed(200 + rows)
    weight, x = torch.randn(80, 64, generator=g), torch.randn(rows, 64, generator=g)
    packed = PackedBF16(weight)
    assert packed.packed == onednn_bf16() and packed.nbytes() == 80 * 64 * 2
    expected = x.bfloat16().float() @ weight.bfloat16().float().T
    got = packed(x.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 80)
    torch.testing.assert_close(got.float(), expected, rtol=1e-2, atol=1e-2)


def test_packed_bf16_pads_rows_and_warms_up_their_counts() -> None:
    """oneDNN runs a row count padded to a multiple of ROW_STEP with zero rows: each row's
    result is the one it gets in a full multiple (the padding rows change nothing), and
    warm_up runs every padded count past ``above`` (a no-op where oneDNN is missing)."""
    g = torch.Generator().manual_seed(9)
    weight, x = torch.randn(48, 64, generator=g), torch.randn(2 * ROW_STEP, 64, generator=g)
    packed = PackedBF16(weight)
    packed.warm_up(max_rows=3 * ROW_STEP, above=ROW_STEP - 1)
    full = packed(x.bfloat16())
    for rows in (ROW_STEP + 1, 2 * ROW_STEP - 3):
        got = packed(x[:rows].bfloat16())
        assert got.shape == (rows, 48)
        torch.testing.assert_close(got, full[:rows], rtol=0, atol=0)


def tuning_model() -> tuple[nn.Sequential, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(
        Int4Linear(torch.randn(256, 128, generator=g)),
        Int8Linear(torch.randn(128, 256, generator=g)),
        Int4Linear(torch.randn(256, 128, generator=g)),
        Int8Linear(torch.randn(64, 256, generator=g), dense=False),  # no dense copy: not tuned
    )
    for layer in quantized_layers(model):
        layer.dense_above = 1_000  # quantized kernels only
    return model, torch.randn(20, 128, generator=g)


def dense_wins_from(
    monkeypatch: pytest.MonkeyPatch, rows_by_in_features: dict[int, int | None]
) -> None:
    """Kernel timings made up (the seam: real ones depend on the CPU and its load): the
    dense copy of the layers with these input sizes is faster from that many rows (None:
    never)."""

    def timed(layers: list[Any], dense: bool, x: torch.Tensor, repeats: int) -> float:
        start = rows_by_in_features[layers[0].in_features]
        dense_wins = start is not None and x.shape[0] >= start
        return 1.0 if dense == dense_wins else 2.0

    monkeypatch.setattr("levant.models.quantize._best_ms", timed)
    monkeypatch.setattr("levant.models.quantize._dense_can_win", lambda layers: True)


def test_tuning_picks_a_row_count_per_shape_and_keeps_the_arithmetic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x = tuning_model()
    layers = quantized_layers(model)
    expected = model(x)
    dense_wins_from(monkeypatch, {128: 16, 256: 64})
    chosen = tune_dense_above(model, repeats=3)
    assert chosen == {(256, 128): 8, (128, 256): 32}
    assert layers[0].dense_above == layers[2].dense_above == 8
    assert layers[1].dense_above == 32 and layers[3].dense_above == 1_000
    for layer in layers[:3]:
        layer.dense_above = 0  # dense copies wherever kept
    torch.testing.assert_close(
        model(x), expected, rtol=3e-2, atol=3e-2 * expected.abs().max().item()
    )
    assert dense_copy_bytes(model) == 2 * (256 * 128 * 2 + 128 * 256)


def test_tuning_drops_the_dense_copies_of_a_shape_where_they_never_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x = tuning_model()
    layers = quantized_layers(model)
    expected, first = model(x), model[0](x)
    dense_wins_from(monkeypatch, {128: None, 256: 64})
    chosen = tune_dense_above(model, repeats=3)
    assert chosen == {(256, 128): TUNE_ROWS[-1], (128, 256): 32}
    assert layers[0].dense is None and layers[2].dense is None and layers[1].dense is not None
    assert dense_copy_bytes(model) == 2 * 128 * 256  # the int8 layer's copy alone
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)  # the same kernels as before
    for layer in layers:
        layer.dense_above = 0  # dense copies wherever kept: none left for the int4 layers
    torch.testing.assert_close(model[0](x), first, rtol=0, atol=0)
    assert model(torch.randn(300, 128)).shape == (300, 64)  # past the tuned rows: quantized


def test_a_margin_keeps_the_quantized_kernel_where_the_dense_copy_barely_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine tunes with a margin when its fused step (quantized kernels only) runs
    the steps: a dense copy 10% faster is not worth leaving it, one 2x faster is."""
    model, _ = tuning_model()

    def timed(layers: list[Any], dense: bool, x: torch.Tensor, repeats: int) -> float:
        if not dense:
            return 2.0
        return 1.8 if layers[0].in_features == 128 else 1.0  # 10% faster, 2x faster

    monkeypatch.setattr("levant.models.quantize._best_ms", timed)
    monkeypatch.setattr("levant.models.quantize._dense_can_win", lambda layers: True)
    assert tune_dense_above(model, repeats=1, margin=1.3) == {
        (256, 128): TUNE_ROWS[-1],
        (128, 256): 0,
    }
    model, _ = tuning_model()  # fresh copies: without a margin, both dense copies win
    assert tune_dense_above(model, repeats=1) == {(256, 128): 0, (128, 256): 0}


def test_tuning_drops_plain_bf16_copies_beside_levants_kernels_untimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where every layer of a shape runs Levant's kernel and its copy is a plain bf16
    matrix (a CPU without oneDNN's bf16 path), the copies are dropped without timing them;
    one oneDNN-packed copy among them and the shape is timed as before."""
    model, x = tuning_model()
    layers = quantized_layers(model)
    if not all(m.runs_levant_kernel() for m in layers):
        pytest.skip("Levant's int4 and int8 kernels do not run on this CPU")
    expected = model(x)
    timed_shapes: list[tuple[int, int]] = []

    def timed(layers: list[Any], dense: bool, x: torch.Tensor, repeats: int) -> float:
        timed_shapes.append((layers[0].out_features, layers[0].in_features))
        return 2.0 if dense else 1.0  # the quantized kernel wins

    monkeypatch.setattr("levant.models.quantize._best_ms", timed)
    for m in layers[:3]:
        assert m.dense is not None
        m.dense.packed = False  # as on a CPU without oneDNN bf16 (never called: dropped)
    layers[1].dense.packed = True  # type: ignore[union-attr]  # the (128, 256) shape: oneDNN's
    chosen = tune_dense_above(model, repeats=1)
    assert chosen == {(256, 128): TUNE_ROWS[-1], (128, 256): TUNE_ROWS[-1]}
    assert set(timed_shapes) == {(128, 256)}  # the plain copies' shape was never timed
    assert dense_copy_bytes(model) == 0
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_tuning_with_real_timings_sets_a_timed_row_count() -> None:
    model, _ = tuning_model()
    chosen = tune_dense_above(model, repeats=3)
    assert set(chosen) == {(256, 128), (128, 256)}
    assert all(rows in (0, *TUNE_ROWS) for rows in chosen.values())
    for layer in quantized_layers(model)[:3]:
        assert (layer.dense is None) == (layer.dense_above == TUNE_ROWS[-1])
