"""LLMEngine on a tiny random model: batched == alone, prefix cache, preemption, sampling."""

from __future__ import annotations

import pytest
import torch

from levant.engine.core import LLMEngine
from levant.engine.errors import ContextLengthExceeded
from levant.engine.protocol import EngineOutput, EngineRequest, SamplingParams
from levant.models.config import ModelConfig
from levant.models.paged_attention import PagedKVCache
from levant.models.transformer import KVCache, Transformer
from tests.engine.conftest import TINY, random_model, random_prompts

GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


def reference_greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """One sequence with the contiguous KV cache: the model's own decode loop."""
    cache = KVCache.allocate(model.config, 1, len(prompt) + n, torch.float32, torch.device("cpu"))
    with torch.inference_mode():
        logits = model(torch.tensor([prompt]), 0, cache)[0, -1]
        out: list[int] = []
        for pos in range(len(prompt), len(prompt) + n):
            out.append(int(logits.argmax()))
            logits = model(torch.tensor([out[-1:]]), pos, cache)[0, -1]
    return out


def make_engine(model: Transformer, *, kv_tokens: int = 4096, **kwargs: object) -> LLMEngine:
    block_size = int(kwargs.pop("block_size", 16))  # type: ignore[call-overload]
    per_block = PagedKVCache.bytes_per_block(model.config, block_size, torch.float32)
    return LLMEngine(
        model,
        model.config,
        model_id="tiny",
        kv_cache_bytes=per_block * (kv_tokens // block_size),
        block_size=block_size,
        **kwargs,  # type: ignore[arg-type]
    )


def run(engine: LLMEngine, requests: list[EngineRequest]) -> dict[str, list[EngineOutput]]:
    for r in requests:
        engine.add_request(r)
    outs: dict[str, list[EngineOutput]] = {r.request_id: [] for r in requests}
    for _ in range(10_000):
        if not engine.has_unfinished_requests():
            return outs
        for o in engine.step():
            outs[o.request_id].append(o)
    raise AssertionError("engine did not finish")


def tokens_of(outs: list[EngineOutput]) -> list[int]:
    return [t for o in outs for t in o.new_token_ids]


def requests(prompts: list[list[int]], params: SamplingParams = GREEDY) -> list[EngineRequest]:
    return [EngineRequest(f"r{i}", p, params) for i, p in enumerate(prompts)]


@pytest.mark.parametrize("window", [None, 8])
def test_batched_equals_alone_and_the_contiguous_cache(window: int | None) -> None:
    model = random_model(ModelConfig(**{**TINY.__dict__, "sliding_window": window}))
    prompts = random_prompts(16, 1, 70)
    # A small budget mixes decodes with prefill chunks that start mid-prompt.
    batched = run(make_engine(model, max_num_batched_tokens=48), requests(prompts))
    for i, prompt in enumerate(prompts):
        alone = run(make_engine(model), requests([prompt]))["r0"]
        expected = reference_greedy(model, prompt, 12)
        assert tokens_of(batched[f"r{i}"]) == tokens_of(alone) == expected


def test_outputs_are_deltas_ending_with_one_finished(tiny_model: Transformer) -> None:
    outs = run(make_engine(tiny_model), requests([[1, 2, 3]]))["r0"]
    assert [len(o.new_token_ids) for o in outs] == [1] * 12
    assert [o.finished for o in outs] == [False] * 11 + [True]
    assert outs[-1].finish_reason == "length" and outs[-1].num_prompt_tokens == 3


def test_prefix_cache_hit_reports_shared_blocks_and_changes_nothing(
    tiny_model: Transformer,
) -> None:
    shared = random_prompts(1, 50, 51, seed=3)[0]  # 3 full blocks of 16, and 2 more tokens
    first, second = [*shared, 7, 8, 9], [*shared, 10, 11]
    engine = make_engine(tiny_model)
    a = run(engine, [EngineRequest("a", first, GREEDY)])["a"]
    b = run(engine, [EngineRequest("b", second, GREEDY)])["b"]
    assert a[-1].num_cached_tokens == 0
    assert b[-1].num_cached_tokens == 48
    assert tokens_of(b) == reference_greedy(tiny_model, second, 12)
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (len(first) + len(second), 48)


def test_prefix_cache_hit_within_a_batch_of_16(tiny_model: Transformer) -> None:
    shared = random_prompts(1, 40, 41, seed=5)[0]
    prompts = [shared + tail for tail in random_prompts(16, 1, 20, seed=6)]
    engine = make_engine(tiny_model, max_num_batched_tokens=512)
    warm = run(engine, requests([shared + [0] * 9]))
    outs = run(engine, requests(prompts))
    assert warm["r0"][-1].num_cached_tokens == 0
    assert all(o[-1].num_cached_tokens == 32 for o in outs.values())
    for i, prompt in enumerate(prompts):
        assert tokens_of(outs[f"r{i}"]) == reference_greedy(tiny_model, prompt, 12)


def test_different_cache_salts_share_nothing(tiny_model: Transformer) -> None:
    prompt = random_prompts(1, 40, 41, seed=4)[0]
    engine = make_engine(tiny_model)
    run(engine, [EngineRequest("a", prompt, GREEDY, cache_salt="workspace-1")])
    other = run(engine, [EngineRequest("b", prompt, GREEDY, cache_salt="workspace-2")])["b"]
    same = run(engine, [EngineRequest("c", prompt, GREEDY, cache_salt="workspace-1")])["c"]
    assert other[-1].num_cached_tokens == 0
    assert same[-1].num_cached_tokens == 32
    assert tokens_of(other) == tokens_of(same)


def test_zero_retention_requests_leave_nothing_in_the_prefix_cache(
    tiny_model: Transformer,
) -> None:
    prompt = random_prompts(1, 40, 41, seed=8)[0]
    engine = make_engine(tiny_model)
    run(engine, [EngineRequest("a", prompt, GREEDY, prefix_cache=False)])
    assert engine.kv.pool.num_cached_blocks == 0  # nothing of "a" is findable
    after = run(engine, [EngineRequest("b", prompt, GREEDY)])["b"]
    assert after[-1].num_cached_tokens == 0
    # And a zero-retention request reads nothing others cached.
    again = run(engine, [EngineRequest("c", prompt, GREEDY, prefix_cache=False)])["c"]
    assert again[-1].num_cached_tokens == 0
    assert tokens_of(again) == tokens_of(after) == reference_greedy(tiny_model, prompt, 12)


def test_kv_exhaustion_preempts_and_recomputes_the_same_tokens(tiny_model: Transformer) -> None:
    prompts = random_prompts(6, 20, 40, seed=7)
    params = SamplingParams(temperature=0.0, max_tokens=30)
    # 96 token slots for six requests of up to 69 tokens each.
    engine = make_engine(tiny_model, kv_tokens=96, block_size=8, enable_prefix_caching=False)
    outs = run(engine, requests(prompts, params))
    assert engine.stats().num_preemptions_total > 0
    for i, prompt in enumerate(prompts):
        assert tokens_of(outs[f"r{i}"]) == reference_greedy(tiny_model, prompt, 30)
    assert engine.kv.pool.num_free_blocks == engine.kv.pool.num_blocks


def test_max_context_is_capped_by_the_cache_and_ends_with_model_length(
    tiny_model: Transformer,
) -> None:
    engine = make_engine(tiny_model, kv_tokens=64)
    assert engine.max_context == engine.kv_cache_tokens == 64
    with pytest.raises(ContextLengthExceeded):
        engine.add_request(EngineRequest("long", [1] * 64, GREEDY))
    outs = run(engine, [EngineRequest("a", [1] * 60, SamplingParams(temperature=0.0))])["a"]
    assert len(tokens_of(outs)) == 4 and outs[-1].finish_reason == "model_length"


def test_max_tokens_zero_finishes_at_once(tiny_model: Transformer) -> None:
    engine = make_engine(tiny_model)
    outs = run(engine, [EngineRequest("a", [1, 2], SamplingParams(max_tokens=0))])["a"]
    assert [(o.new_token_ids, o.finish_reason) for o in outs] == [([], "length")]


def test_seeded_sampling_does_not_depend_on_the_batch(tiny_model: Transformer) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=16)
    prompt = [3, 1, 4, 1, 5]
    alone = run(make_engine(tiny_model), [EngineRequest("x", prompt, params)])["x"]
    others = [
        EngineRequest(f"o{i}", p, SamplingParams(temperature=0.7, seed=i, max_tokens=16))
        for i, p in enumerate(random_prompts(15, 1, 30))
    ]
    crowd = run(
        make_engine(tiny_model), [*others[:7], EngineRequest("x", prompt, params), *others[7:]]
    )
    assert tokens_of(crowd["x"]) == tokens_of(alone)
    assert len(set(tokens_of(alone))) > 1


def test_min_tokens_suppresses_stop_tokens(tiny_model: Transformer) -> None:
    prompt = [9, 9, 9]
    first = reference_greedy(tiny_model, prompt, 1)[0]
    stop = frozenset({first})
    engine = make_engine(tiny_model)
    plain = SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=stop)
    held = SamplingParams(temperature=0.0, max_tokens=10, stop_token_ids=stop, min_tokens=3)
    outs = run(engine, [EngineRequest("a", prompt, plain), EngineRequest("b", prompt, held)])
    assert tokens_of(outs["a"]) == [first] and outs["a"][-1].finish_reason == "stop"
    assert len(tokens_of(outs["b"])) >= 3 and first not in tokens_of(outs["b"])[:3]


def test_penalties_change_greedy_choices(tiny_model: Transformer) -> None:
    prompt = [4, 4, 4, 4]
    engine = make_engine(tiny_model)
    p = SamplingParams(temperature=0.0, max_tokens=20, frequency_penalty=100.0)
    outs = run(engine, [EngineRequest("a", prompt, p)])["a"]
    tokens = tokens_of(outs)
    assert len(set(tokens)) == len(tokens)  # a huge frequency penalty forbids repeats


def test_timeout_aborts_queued_and_running_requests(tiny_model: Transformer) -> None:
    now = [0.0]
    engine = make_engine(tiny_model, clock=lambda: now[0], max_num_seqs=1)
    engine.add_request(EngineRequest("run", [1, 2], GREEDY, timeout_s=5.0))
    engine.add_request(EngineRequest("queued", [1, 2], GREEDY, timeout_s=5.0))
    first = engine.step()
    assert [o.request_id for o in first] == ["run"]
    now[0] = 6.0
    outs = engine.step()
    assert {(o.request_id, o.finish_reason) for o in outs} == {
        ("run", "abort"),
        ("queued", "abort"),
    }
    assert not engine.has_unfinished_requests()
    assert engine.kv.pool.num_free_blocks == engine.kv.pool.num_blocks


def test_stats_count_tokens_and_latencies(tiny_model: Transformer) -> None:
    engine = make_engine(tiny_model)
    run(engine, requests([[1, 2, 3], [4, 5]]))
    s = engine.stats()
    assert (s.prompt_tokens_total, s.generation_tokens_total) == (5, 24)
    assert s.request_success_total == {"length": 2}
    assert s.time_to_first_token.count == 2 and s.e2e_request_latency.count == 2
    assert s.inter_token_latency.count == 22
    assert s.num_requests_running == s.num_requests_waiting == 0 and s.kv_cache_usage == 0.0


def test_generate_runs_one_request_and_honours_cancellation(tiny_model: Transformer) -> None:
    engine = make_engine(tiny_model)
    req = EngineRequest("a", [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=50))
    seen: list[EngineOutput] = []
    for out in engine.generate(req, cancelled=lambda: len(seen) >= 3):
        seen.append(out)
    assert seen[-1].finish_reason == "abort" and len(tokens_of(seen)) == 3
    assert engine.kv.pool.num_free_blocks == engine.kv.pool.num_blocks
