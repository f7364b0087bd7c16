"""Weight-only int8 and int4 quantization, applied to a built model from outside (as
gpt-fast does).

``quantize_int8``: every ``nn.Linear`` in the blocks, and the output head (the embedding
matrix when tied), becomes an ``Int8Linear``: symmetric per-output-channel int8 weights
with one scale per row. The matmul is Levant's ``levant::q8_matmul`` where the CPU has
AVX-512 VNNI or AVX2 (activations rounded to int8 per group of 32, as llama.cpp's Q8 dot
products do: SmolLM2's 49152 x 576 head at one row on a 2-core EPYC takes 0.45 ms with VNNI
against 2.0 ms, and 0.60 ms with AVX2 against 2.05 ms),
else PyTorch's CPU kernel ``_weight_int8pack_mm``, fed bf16 activations (its fast path);
everything else (norms, rotary, attention, the KV cache) stays in the model's dtype. The
model file never knows.

That kernel reads the weights once per call, which is what a decode step of a few
tokens needs (it is bandwidth bound), but its cost grows with every row. For steps of
more than ``dense_above`` rows (a prefill chunk, a decode batch) each layer also keeps
the same quantized weights dequantized to bf16, prepacked for oneDNN (``PackedBF16``:
AMX or AVX512-BF16), whose cost barely moves from 1 to 16 rows: for 2 more bytes per
weight, 2.3 times the int4 kernel's speed at 16 rows on a 2-core Xeon with AMX.

Where the two kernels cross depends on the CPU, so ``tune_dense_above`` measures both
on the model's own matrices (on the thread that will run the steps) and sets the row
count; until then it is ``DENSE_ABOVE``.

``quantize_int4``: the blocks' linears become ``Int4Linear``: asymmetric 4-bit weights in
groups of 32 along the input dimension, one scale and one minimum per group -- the
arithmetic of GGUF's Q4_1, so a Q4_1 checkpoint (dequantized by the loader) comes back to
the same 4-bit codes, up to bf16 rounding of the scales. The kernel is PyTorch's
``_weight_int4pack_mm_for_cpu`` (bf16 activations); it reads half the bytes of int8, which
is what a decode step is bound by, and like int8 it is used for steps of up to
``dense_above`` rows, the dense bf16 copy beyond. The output head stays int8 (GGUF
checkpoints ship it as Q8_0: sampling is sensitive to its precision).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from levant import kernels
from levant.models.dense_linear import PackedBF16
from levant.models.transformer import Transformer

DENSE_ABOVE = 4  # rows per call above which the dense bf16 copy is used, until tuned
GROUP_SIZE = 32  # int4: input features per scale/minimum, as GGUF's Q4_1
# The row counts ``tune_dense_above`` times, up to a full prefill chunk: without AMX the
# int4 x int8 VNNI kernel beats the dense bf16 copy even at 256 rows on some CPUs.
TUNE_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _WeightOnlyLinear(nn.Module, abc.ABC):
    """Quantized weights for steps of up to ``dense_above`` rows, the dense bf16 copy (when
    kept) beyond; bf16 activations into either, the caller's dtype out."""

    in_features: int
    out_features: int
    # Not a buffer: an opaque oneDNN tensor that only oneDNN ops (and not dynamo) can read.
    dense: PackedBF16 | None
    dense_above: int = DENSE_ABOVE

    @abc.abstractmethod
    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        """(M, in) -> (M, out) with the quantized kernel (which casts x as it needs)."""

    @abc.abstractmethod
    def runs_levant_kernel(self) -> bool:
        """Whether the quantized kernel is Levant's (levant::q4_matmul or q8_matmul), not
        PyTorch's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)  # (M, in)
        if self.dense is not None and x2.shape[0] > self.dense_above:
            y = self.dense(x2.to(torch.bfloat16))
        else:
            y = self._quantized_mm(x2)  # (M, out)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


class Int8Linear(_WeightOnlyLinear):
    weight: torch.Tensor
    scales: torch.Tensor
    q8_packed: torch.Tensor | None  # levant::q8_matmul's layout, where the CPU runs it
    q8_scales: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, *, dense: bool = True) -> None:
        super().__init__()
        w = weight.detach().float()  # (out, in)
        scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.register_buffer("weight", q)  # (out, in) int8
        self.register_buffer("scales", scales.to(torch.bfloat16))  # (out,)
        # The same values for levant::q8_matmul (AVX-512 VNNI or AVX2), where this CPU runs it.
        q8: tuple[torch.Tensor, torch.Tensor] | tuple[None, None] = (None, None)
        if self.out_features % 16 == 0 and self.in_features % 32 == 0 and kernels.q4_ready():
            q8 = pack_q8(q), self.scales.float()
        self.register_buffer("q8_packed", q8[0])
        self.register_buffer("q8_scales", q8[1])
        # The same quantized values, dequantized, for large steps (None: int8 only).
        self.dense = PackedBF16(q.float() * self.scales.float()[:, None]) if dense else None

    def runs_levant_kernel(self) -> bool:
        return self.q8_packed is not None

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        if self.q8_packed is not None:
            q8: torch.Tensor = torch.ops.levant.q8_matmul(
                x.float().contiguous(), self.q8_packed, self.q8_scales
            )
            return q8
        y: torch.Tensor = torch.ops.aten._weight_int8pack_mm(
            x.to(torch.bfloat16), self.weight, self.scales
        )
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int4Linear(_WeightOnlyLinear):
    packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    q4_packed: torch.Tensor | None  # levant::q4_matmul's layout, where the CPU runs it
    q4_scales: torch.Tensor | None

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
        # The same codes for levant::q4_matmul (AVX-512 VNNI or AVX2), where this CPU runs it.
        # (Buffers, so that the registry's memory accounting counts them.)
        q4: tuple[torch.Tensor, torch.Tensor] | tuple[None, None] = (None, None)
        if out % 16 == 0 and kernels.q4_ready():
            q4 = pack_q4(codes, *sz.unbind(-1))
        self.register_buffer("q4_packed", q4[0])
        self.register_buffer("q4_scales", q4[1])
        self.dense = None
        if dense:  # dequantized from the bf16 scales, as the kernel does
            s, z = sz.float().unbind(-1)
            self.dense = PackedBF16(((q - 8) * s[..., None] + z[..., None]).view(out, k))

    def runs_levant_kernel(self) -> bool:
        return self.q4_packed is not None

    def _quantized_mm(self, x: torch.Tensor) -> torch.Tensor:
        if self.q4_packed is not None:
            q4: torch.Tensor = torch.ops.levant.q4_matmul(
                x.float().contiguous(), self.q4_packed, self.q4_scales
            )
            return q4
        y: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), self.packed, self.group_size, self.scales_and_zeros
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


def pack_q4(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """4-bit codes (N, K) and per-group scale, zero (N, K / 32), rounded to bf16 -> levant::
    q4_matmul's layout: packed (N / 16, K / 32, 4, 64) uint8 and scales (N / 16, K / 32, 2,
    16) bfloat16, where w = scale * (q - 8) + zero (see ``levant/kernels/q4_matmul.cpp``)."""
    n, k = codes.shape
    nt, g = n // 16, k // GROUP_SIZE
    # input 32 g + 8 p + 4 half + i of output 16 t + j
    c = codes.to(torch.uint8).view(nt, 16, g, 4, 2, 4)
    nibbles = c[..., 0, :] | (c[..., 1, :] << 4)  # (t, j, g, p, i)
    packed = nibbles.permute(0, 2, 3, 1, 4).reshape(nt, g, 4, 64).contiguous()
    scales = torch.stack([scale, zero], dim=-1).to(torch.bfloat16).view(nt, 16, g, 2)
    return packed, scales.permute(0, 2, 3, 1).contiguous()  # (t, g, scale | zero, j)


def pack_q8(weight: torch.Tensor) -> torch.Tensor:
    """int8 weights (N, K) -> levant::q8_matmul's layout: (N / 16, K / 4, 64) uint8 holding
    w + 128, byte 4 j + i of quad p in tile t for w[16 t + j][4 p + i] (see
    ``levant/kernels/q8_matmul.cpp``)."""
    n, k = weight.shape
    shifted = (weight.to(torch.int16) + 128).to(torch.uint8).view(n // 16, 16, k // 4, 4)
    return shifted.permute(0, 2, 1, 3).reshape(n // 16, k // 4, 64).contiguous()


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


def quantized_layers(model: nn.Module) -> list[_WeightOnlyLinear]:
    return [m for m in model.modules() if isinstance(m, _WeightOnlyLinear)]


def dense_copy_bytes(model: nn.Module) -> int:
    """Bytes of the packed bf16 copies (not buffers, so not in ``model.buffers()``)."""
    return sum(m.dense.nbytes() for m in quantized_layers(model) if m.dense is not None)


def tune_dense_above(
    model: nn.Module, *, repeats: int = 5, margin: float = 1.0
) -> dict[tuple[int, int], int]:
    """For each distinct matrix shape among the model's quantized layers, time both
    kernels at ``TUNE_ROWS`` rows and set ``dense_above`` of the layers of that shape to
    the largest row count below the first one where the dense copy wins (the quantized
    kernel's cost grows with rows, the dense one's barely does). Each timing runs every
    layer of the shape in turn, so the weights stream from memory as in a real step (one
    matrix alone would sit in cache and flatter the dense copy, which reads 2 to 4 times
    the bytes). Call it on the thread, and with the thread count, that will run the
    steps. A shape whose dense copy never wins, not even at ``TUNE_ROWS[-1]`` rows (a full
    prefill chunk), drops its copies: the quantized kernel runs every step (as it would
    with ``dense=False``) and the bf16 bytes are freed (SmolLM2 int4 on a 2-core EPYC
    without AMX: all of them, ~270 MB). The dense copy wins at n rows when its time times
    ``margin`` is below the quantized kernel's: above 1 where switching to it costs more
    than the two matmuls (the engine's fused step, which runs only quantized kernels).
    A shape whose copies cannot win (``_dense_can_win``) is not timed: its copies are
    dropped at once. Returns {(out, in): rows}."""
    by_shape: dict[tuple[int, int], list[_WeightOnlyLinear]] = {}
    for m in quantized_layers(model):
        if m.dense is not None:
            by_shape.setdefault((m.out_features, m.in_features), []).append(m)
    chosen: dict[tuple[int, int], int] = {}
    for shape, layers in by_shape.items():
        rows = TUNE_ROWS[-1]
        for i, n in enumerate(TUNE_ROWS if _dense_can_win(layers) else ()):
            x = torch.randn(n, shape[1])
            if _best_ms(layers, True, x, repeats) * margin < _best_ms(layers, False, x, repeats):
                rows = TUNE_ROWS[i - 1] if i else 0
                break
        for layer in layers:
            layer.dense_above = rows
            if rows == TUNE_ROWS[-1]:
                layer.dense = None
        chosen[shape] = rows
    return chosen


def warm_up_dense(model: nn.Module, max_rows: int) -> int:
    """Generate oneDNN's kernels for the dense copies kept by ``tune_dense_above``, at every
    padded row count a step of up to ``max_rows`` rows can give them (``PackedBF16.warm_up``),
    once per matrix shape. Returns the shapes warmed."""
    seen: set[tuple[int, int]] = set()
    for m in quantized_layers(model):
        shape = (m.out_features, m.in_features)
        if m.dense is not None and shape not in seen:
            seen.add(shape)
            m.dense.warm_up(max_rows, m.dense_above)
    return len(seen)


def _dense_can_win(layers: list[_WeightOnlyLinear]) -> bool:
    """Whether timing these layers' dense copies against their quantized kernel can come out
    for the copies: not where every layer runs one of Levant's kernels and its copy is a
    plain bf16 matrix (no oneDNN bf16 path on this CPU, so ``F.linear``'s bf16 loops). On a
    2-core Zen 3 (AVX2 only) those never won for any SmolLM2 shape up to 256 rows, and
    timing them was most of an engine's start-up (warm-up 52.7 s, 0.1 s without)."""
    return not all(
        m.runs_levant_kernel() and m.dense is not None and not m.dense.packed for m in layers
    )


def _best_ms(layers: list[_WeightOnlyLinear], dense: bool, x: torch.Tensor, repeats: int) -> float:
    """Best time of ``repeats`` passes of ``x`` through every layer, with one kernel: the
    fastest pass is the one least disturbed by other work on the machine (a median of three
    moved the crossover from run to run on a busy 2-core VM)."""
    xb = x.to(torch.bfloat16)

    def one_pass() -> None:
        for layer in layers:
            if dense:
                assert layer.dense is not None
                layer.dense(xb)
            else:
                layer._quantized_mm(x)

    with torch.inference_mode():
        one_pass()  # first call: allocation, oneDNN primitive creation
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            one_pass()
            times.append(time.perf_counter() - t0)
    return min(times) * 1e3


# A switch that never turns: the quantized kernel at every row count.
UNLIMITED = 1 << 62


@contextmanager
def quantized_kernels_only(model: nn.Module) -> Iterator[None]:
    """Every quantized layer on its quantized kernel, whatever the rows, inside the block:
    each row's arithmetic is then its own (the int4 and int8 kernels compute a row alone,
    the same at any row count; a dense copy rounds activations to bf16 past its switch,
    and oneDNN's matmul itself rounds a row differently at up to 32 rows than at more)."""
    layers = [m for m in quantized_layers(model) if m.dense is not None]
    saved = [m.dense_above for m in layers]
    for m in layers:
        m.dense_above = UNLIMITED
    try:
        yield
    finally:
        for m, rows in zip(layers, saved, strict=True):
            m.dense_above = rows
