"""The fused decode step (``levant::decode_step``): the same hidden states and greedy
tokens as the layer-by-layer step on the same quantized weights, the path the engine
actually takes for decode steps, and its limits (a float model, a layer that prefers its
dense copy at that many rows, bad inputs).

The reference is the model's own ``hidden_states`` over the same paged cache with the same
kernels per layer (itself checked against the contiguous cache and transformers
elsewhere): what differs is only the order of float operations in the norms, rotary and
SwiGLU, so the hidden states agree to float32 rounding.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from levant import kernels
from levant.engine.core import LLMEngine
from levant.engine.fused_decode import FusedDecode
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models.config import ModelConfig
from levant.models.paged_attention import (
    DecodeAttention,
    PagedKVCache,
    SequenceChunk,
    plan_attention,
)
from levant.models.quantize import quantize_int4, quantize_int8, quantized_layers
from levant.models.transformer import Transformer
from tests.engine.conftest import TINY, random_model, random_prompts
from tests.engine.test_engine import run, tokens_of

pytestmark = pytest.mark.skipif(
    not kernels.q4_ready(), reason="Levant's quantized kernels need AVX2 or AVX-512 VNNI"
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)


class Counting(FusedDecode):
    calls: ClassVar[list[int]] = []

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: DecodeAttention
    ) -> torch.Tensor:
        type(self).calls.append(tokens.shape[0])
        return super().__call__(tokens, positions, attend)


def quantized(kind: str, window: int | None = None) -> Transformer:
    model = random_model(ModelConfig(**{**TINY.__dict__, "sliding_window": window}))
    return (quantize_int4 if kind == "int4" else quantize_int8)(model, dense=False)


def decode_inputs(
    model: Transformer, contexts: list[int], block_size: int = 4
) -> tuple[torch.Tensor, torch.Tensor, PagedKVCache, DecodeAttention]:
    """R sequences with random keys and values already cached, each decoding one token."""
    c = model.config
    num_blocks = sum(n // block_size + 1 for n in contexts) + 1
    cache = PagedKVCache.allocate(c, num_blocks, block_size, torch.bfloat16, torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    for kv in cache.kv:
        kv.copy_(torch.randn(kv.shape, generator=g))
    chunks, slots, next_block = [], [], 0
    for i, n in enumerate(contexts):  # the new token at position n, after n cached ones
        blocks = list(range(next_block, next_block + n // block_size + 1))
        next_block += len(blocks)
        chunks.append(SequenceChunk(i, 1, n, blocks))
        slots.append(blocks[n // block_size] * block_size + n % block_size)
    [group] = plan_attention(chunks, block_size, c.sliding_window, torch.device("cpu"))
    tokens = torch.randint(0, c.vocab_size, (len(contexts),), generator=g)
    attend = DecodeAttention.of(cache, torch.tensor(slots), group)
    return tokens, torch.tensor(contexts), cache, attend


@pytest.mark.parametrize(("kind", "window"), [("int4", None), ("int8", None), ("int4", 6)])
def test_same_hidden_states_and_cache_writes_as_the_layers(kind: str, window: int | None) -> None:
    model = quantized(kind, window)
    fused = FusedDecode.of(model)
    assert fused is not None
    contexts = [0, 3, 9, 17, 30]
    tokens, positions, cache, attend = decode_inputs(model, contexts)
    before = [kv.clone() for kv in cache.kv]
    with torch.inference_mode():
        got = fused(tokens, positions, attend)
        after_fused = [kv.clone() for kv in cache.kv]
        for kv, b in zip(cache.kv, before, strict=True):
            kv.copy_(b)
        want = model.hidden_states(tokens[None], positions, attend)
    assert got.shape == want.shape == (1, len(contexts), TINY.dim)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # Each layer's new keys and values landed in the same slots, and nothing else moved.
    for fused_kv, layer_kv, b in zip(after_fused, cache.kv, before, strict=True):
        torch.testing.assert_close(fused_kv.float(), layer_kv.float(), rtol=1e-2, atol=1e-2)
        changed = (fused_kv != b).any(-1).any(-1).nonzero().flatten().tolist()
        assert set(changed) <= set(attend.slot_mapping.tolist())
        assert changed  # the new tokens were written


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_engine_runs_every_decode_step_fused_with_the_layer_by_layer_tokens(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = quantized(kind)
    monkeypatch.setattr("levant.engine.core.FusedDecode", Counting)
    fused = LLMEngine(model, model.config)
    plain = LLMEngine(model, model.config, fused_decode=False)
    assert isinstance(fused.runner.fused, Counting) and plain.runner.fused is None
    Counting.calls = []
    reqs = [EngineRequest(f"r{i}", p, GREEDY) for i, p in enumerate(random_prompts(6, 3, 40))]
    got, want = run(fused, reqs), run(plain, reqs)
    assert {k: tokens_of(v) for k, v in got.items()} == {k: tokens_of(v) for k, v in want.items()}
    assert all(len(tokens_of(v)) == 16 for v in got.values())
    assert max(Counting.calls) == 6  # all six sequences decoding together
    assert sum(Counting.calls) >= 6 * 14  # every decode step (prefills sample the first token)


def test_a_float_model_has_no_fused_step() -> None:
    assert FusedDecode.of(random_model()) is None
    assert LLMEngine(random_model(), TINY).runner.fused is None


def test_rows_past_a_layers_switch_to_its_dense_copy_are_not_fused() -> None:
    model = quantize_int4(random_model())  # with dense copies
    for layer in quantized_layers(model):
        layer.dense_above = 2
    fused = FusedDecode.of(model)
    assert fused is not None
    assert fused.max_rows == 2 and fused.covers(2) and not fused.covers(3)
    tokens, positions, _, attend = decode_inputs(model, [1, 2, 3])
    with pytest.raises(ValueError, match="1 to 2 sequences"):
        fused(tokens, positions, attend)
    for layer in quantized_layers(model):
        layer.dense = None  # what tuning does when the dense copy never wins
    fused.refresh()
    assert fused.max_rows == 64


def test_bad_inputs_are_refused_before_anything_is_written() -> None:
    model = quantized("int4")
    fused = FusedDecode.of(model)
    assert fused is not None
    tokens, positions, cache, attend = decode_inputs(model, [2, 5])
    before = [kv.clone() for kv in cache.kv]
    attend.slot_mapping[1] = cache.kv[0].shape[0]  # past the cache
    with torch.inference_mode(), pytest.raises(RuntimeError, match="slot out of the cache"):
        fused(tokens, positions, attend)
    attend.slot_mapping[1] = 0
    attend.bounds[0, 1] = 10_000  # past the block table
    with torch.inference_mode(), pytest.raises(RuntimeError, match="bounds out of the block"):
        fused(tokens, positions, attend)
    assert all(torch.equal(a, b) for a, b in zip(cache.kv, before, strict=True))
