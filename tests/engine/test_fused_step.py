"""The fused step (``levant::fused_step``): the same hidden states, cache writes and greedy
tokens as the layer-by-layer forward on the same quantized weights, for decode steps,
prefill chunks and steps that mix them; past a layer's switch, its dense bf16 copy inside
the op, as the layer's forward multiplies by it; the path the engine actually takes; and
its limits (a float model, bad inputs).

The reference is the model's own ``hidden_states`` over the same paged cache with the same
matmul kernels per layer and PyTorch's attention (SDPA over gathered blocks with a mask:
the C++ attention kernels are switched off for it, with a float32 cache), itself checked
against the contiguous cache and transformers elsewhere. What differs is the order of
float operations in the norms, rotary, SwiGLU and softmax, so the hidden states agree to
float32 rounding.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from levant import kernels
from levant.engine.core import LLMEngine
from levant.engine.fused_step import FusedStep, block_linears
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models import paged_attention
from levant.models.config import ModelConfig
from levant.models.dense_linear import PackedBF16
from levant.models.paged_attention import (
    PagedAttention,
    PagedKVCache,
    SequenceChunk,
    plan_attention,
)
from levant.models.quantize import (
    UNLIMITED,
    Int4Linear,
    quantize_int4,
    quantize_int8,
    quantized_layers,
)
from levant.models.transformer import Transformer
from tests.engine.conftest import TINY, random_model, random_prompts
from tests.engine.test_engine import run, tokens_of

pytestmark = pytest.mark.skipif(
    not kernels.q4_ready(), reason="Levant's quantized kernels need AVX2 or AVX-512 VNNI"
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
BS = 4  # block size


class Counting(FusedStep):
    calls: ClassVar[list[tuple[int, int]]] = []  # (tokens, sequences) per step

    def __call__(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        chunks: list[SequenceChunk],
        cache: PagedKVCache,
        invariant: bool = False,
    ) -> torch.Tensor:
        type(self).calls.append((tokens.shape[0], len(chunks)))
        return super().__call__(tokens, positions, chunks, cache, invariant)


def quantized(kind: str, window: int | None = None) -> Transformer:
    model = random_model(ModelConfig(**{**TINY.__dict__, "sliding_window": window}))
    return (quantize_int4 if kind == "int4" else quantize_int8)(model, dense=False)


def step_inputs(
    model: Transformer, spans: list[tuple[int, int]], dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor, list[SequenceChunk], torch.Tensor, PagedKVCache]:
    """Sequences (cached, new) in row order, with random keys and values cached: their
    tokens, positions, chunks, slots and the cache (of ``dtype``)."""
    c = model.config
    num_blocks = sum((cached + new) // BS + 1 for cached, new in spans) + 1
    cache = PagedKVCache.allocate(c, num_blocks, BS, dtype, torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    for kv in cache.kv:
        kv.copy_(torch.randn(kv.shape, generator=g))
    chunks, slots, positions, next_block, row = [], [], [], num_blocks - 1, 0
    for cached, new in spans:  # blocks handed out from the top down, so tables are not 0..n
        blocks = list(range(next_block, next_block - (cached + new) // BS - 1, -1))
        next_block -= len(blocks)
        chunks.append(SequenceChunk(row, new, cached, blocks))
        positions += range(cached, cached + new)
        slots += [blocks[p // BS] * BS + p % BS for p in range(cached, cached + new)]
        row += new
    tokens = torch.randint(0, c.vocab_size, (row,), generator=g)
    return tokens, torch.tensor(positions), chunks, torch.tensor(slots), cache


STEPS = {
    "decodes": [(0, 1), (3, 1), (9, 1), (17, 1), (30, 1)],
    "a fresh prefill": [(0, 37)],
    "mixed": [(5, 1), (0, 13), (22, 1), (9, 20), (40, 1)],  # decodes between chunks
}


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize(("kind", "window"), [("int4", None), ("int8", None), ("int4", 6)])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_same_hidden_states_and_cache_writes_as_the_layers(
    kind: str,
    window: int | None,
    step: str,
    cache_dtype: torch.dtype,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a float32 cache the reference attends with SDPA; with a bf16 one, SDPA would
    round the queries to bf16 too, so it runs the C++ attention kernels (each checked
    against SDPA in tests/kernels)."""
    model = quantized(kind, window)
    fused = FusedStep.of(model)
    assert fused is not None and set(fused.dense_above) == {UNLIMITED}
    tokens, positions, chunks, slots, cache = step_inputs(model, STEPS[step], cache_dtype)
    before = [kv.clone() for kv in cache.kv]
    with torch.inference_mode():
        got = fused(tokens, positions, chunks, cache)
        after_fused = [kv.clone() for kv in cache.kv]
        for kv, b in zip(cache.kv, before, strict=True):
            kv.copy_(b)
        if cache_dtype == torch.float32:
            monkeypatch.setattr(paged_attention, "kernel_takes", lambda q, kv: False)
        groups = plan_attention(chunks, BS, window, torch.device("cpu"))
        want = model.hidden_states(tokens[None], positions, PagedAttention(cache, slots, groups))
    assert got.shape == want.shape == (1, tokens.shape[0], TINY.dim)
    # A bf16 cache rounds each key and value: where the two paths' float32 values straddle
    # a rounding boundary, one bf16 step (2^-8 relative) apart, and so do the activations'
    # int8 groups downstream (seen on AVX2: 9.6e-4 at most, in 54 of 2,304 values).
    tol = 1e-4 if cache_dtype == torch.float32 else 5e-3
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    # Each layer's new keys and values landed in the same slots, and nothing else moved.
    for fused_kv, layer_kv, b in zip(after_fused, cache.kv, before, strict=True):
        torch.testing.assert_close(fused_kv.float(), layer_kv.float(), rtol=1e-2, atol=1e-2)
        changed = (fused_kv != b).any(-1).any(-1).nonzero().flatten().tolist()
        assert set(changed) <= set(slots.tolist())
        assert changed  # the new tokens were written


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_engine_runs_every_step_fused_with_the_layer_by_layer_tokens(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = quantized(kind)
    monkeypatch.setattr("levant.engine.core.FusedStep", Counting)
    # A budget of 32 tokens: prompts are cut into chunks and mixed with decodes.
    fused = LLMEngine(model, model.config, max_num_batched_tokens=32)
    plain = LLMEngine(model, model.config, max_num_batched_tokens=32, fused_step=False)
    assert isinstance(fused.runner.fused, Counting) and plain.runner.fused is None
    Counting.calls = []
    reqs = [EngineRequest(f"r{i}", p, GREEDY) for i, p in enumerate(random_prompts(6, 3, 40))]
    got, want = run(fused, reqs), run(plain, reqs)
    assert {k: tokens_of(v) for k, v in got.items()} == {k: tokens_of(v) for k, v in want.items()}
    assert all(len(tokens_of(v)) == 16 for v in got.values())
    assert (6, 6) in Counting.calls  # all six sequences decoding together
    assert any(t > n > 1 for t, n in Counting.calls)  # a chunk beside other sequences
    prompt_tokens = sum(len(r.prompt_token_ids) for r in reqs)
    assert sum(t for t, _ in Counting.calls) == prompt_tokens + 6 * 15  # every step fused


def test_a_float_model_has_no_fused_step() -> None:
    assert FusedStep.of(random_model()) is None
    assert LLMEngine(random_model(), TINY).runner.fused is None


def test_rows_past_a_layers_switch_run_its_dense_copy_inside_the_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Layers whose switch (``dense_above``) is below the step's rows multiply by their dense
    bf16 copy inside the op, oneDNN-packed or a plain matrix (where oneDNN has no bf16
    matmul), the others by the quantized kernel: the same hidden states as the layers'
    own forward, which switches the same way. And the switch is really taken: with every
    layer on its quantized kernel the result moves (bf16 activations against int8 groups)."""
    model = quantize_int4(random_model())  # with dense copies
    linears = [m for m in block_linears(model) if isinstance(m, Int4Linear)]
    assert len(linears) == 4 * TINY.n_layers and all(m.dense is not None for m in linears)
    for i, m in enumerate(linears):
        m.dense_above = [2, 100, 0][i % 3]  # past 2 rows, never here, always
        if i % 2 and m.dense is not None:  # a plain bf16 matrix, at::linear in the op
            plain = PackedBF16.__new__(PackedBF16)
            plain.out_features, plain.in_features = m.out_features, m.in_features
            plain.packed, plain.weight = False, m.dense.weight
            if m.dense.packed:
                plain.weight = m.dequantized().to(torch.bfloat16).contiguous()
            m.dense = plain
    fused = FusedStep.of(model)
    assert fused is not None
    tokens, positions, chunks, slots, cache = step_inputs(
        model, STEPS["mixed"], dtype=torch.float32
    )
    before = [kv.clone() for kv in cache.kv]
    monkeypatch.setattr(paged_attention, "kernel_takes", lambda q, kv: False)
    with torch.inference_mode():
        got = fused(tokens, positions, chunks, cache)
        for kv, b in zip(cache.kv, before, strict=True):
            kv.copy_(b)
        groups = plan_attention(chunks, BS, None, torch.device("cpu"))
        want = model.hidden_states(tokens[None], positions, PagedAttention(cache, slots, groups))
        for kv, b in zip(cache.kv, before, strict=True):
            kv.copy_(b)
        for m in linears:
            m.dense_above = UNLIMITED
        fused.refresh()
        quantized_only = fused(tokens, positions, chunks, cache)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - quantized_only).abs().max() > 1e-3


@pytest.mark.parametrize("fused_step", [True, False])
def test_a_seeded_request_gets_the_tokens_it_gets_alone_in_any_batch(fused_step: bool) -> None:
    """Dense copies past 2 rows (as tuning chooses on an AMX CPU, where they are oneDNN's
    bf16 tiles): a seeded request sampled beside other requests, after its prompt was
    computed and cached by an unseeded one, draws what it draws alone, fused or layer by
    layer: its steps keep every layer on the quantized kernels and it computes its whole
    prompt. Without that, the same run on this model and seed draws other tokens."""
    model = quantize_int4(random_model())  # with dense copies
    for m in quantized_layers(model):
        m.dense_above = 2
    seeded = SamplingParams(temperature=1.0, seed=3, max_tokens=12, ignore_eos=True)
    free = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)
    prompt, *others = random_prompts(6, 20, 40, seed=4)

    def engine() -> LLMEngine:
        return LLMEngine(model, model.config, max_num_batched_tokens=64, fused_step=fused_step)

    alone = tokens_of(run(engine(), [EngineRequest("s", prompt, seeded)])["s"])
    crowded = engine()
    run(crowded, [EngineRequest("first", prompt, GREEDY)])  # caches the prompt's blocks
    batch = [EngineRequest("s", prompt, seeded)]
    batch += [EngineRequest(f"o{i}", p, free) for i, p in enumerate(others)]
    assert tokens_of(run(crowded, batch)["s"]) == alone
    assert len(alone) == 12


def test_bad_inputs_are_refused_before_anything_is_written() -> None:
    model = quantized("int4")
    fused = FusedStep.of(model)
    assert fused is not None
    tokens, positions, chunks, _, cache = step_inputs(model, [(2, 1), (5, 6)])
    before = [kv.clone() for kv in cache.kv]
    bad = [
        ("block id out of the cache", [chunks[0], SequenceChunk(1, 6, 5, [0, 99, 1])]),
        ("block id out of the cache", [chunks[0], SequenceChunk(1, 6, 5, [0])]),  # too short
        ("rows out of order", [chunks[1], chunks[0]]),
        ("do not cover the step", [chunks[0], SequenceChunk(1, 5, 5, chunks[1].block_table)]),
    ]
    with torch.inference_mode():
        for message, wrong in bad:
            with pytest.raises(RuntimeError, match=message):
                fused(tokens, positions, wrong, cache)
        # Dense copies for some layers only (the op takes 4 per layer, or none at all).
        fused.dense, fused.dense_above, fused.first_switch = fused.dense[:4], [0] * 4, 0
        with pytest.raises(RuntimeError, match="4 per layer"):
            fused(tokens, positions, chunks, cache)
    assert all(torch.equal(a, b) for a, b in zip(cache.kv, before, strict=True))
