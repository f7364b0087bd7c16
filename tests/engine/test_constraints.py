"""Logits constraints in the engine: masking in the batched sampler, finishing when the
constraint is complete, and consistency under preemption (no grammar library involved)."""

from __future__ import annotations

import torch

from levant.engine.constraints import (
    LogitsConstraint,
    apply_constraints,
    bitmask_words,
    unpack_bitmask,
)
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models.transformer import Transformer
from tests.engine.conftest import random_prompts
from tests.engine.test_engine import make_engine, reference_greedy, run, tokens_of


class AllowedSet:
    """A toy constraint: token ids from ``allowed`` only; complete after ``length`` tokens."""

    def __init__(self, allowed: set[int], length: int) -> None:
        self.allowed = allowed
        self.length = length
        self.consumed: list[int] = []

    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        for t in self.allowed:
            if t // 32 < bitmask.numel():
                word = int(bitmask[t // 32]) | (1 << (t % 32))
                bitmask[t // 32] = word - (1 << 32) if word >= 1 << 31 else word

    def advance(self, token_id: int) -> None:
        assert token_id in self.allowed, f"sampled a forbidden token {token_id}"
        self.consumed.append(token_id)

    def is_done(self) -> bool:
        return len(self.consumed) >= self.length


def test_the_toy_constraint_implements_the_protocol() -> None:
    assert isinstance(AllowedSet({1}, 1), LogitsConstraint)


def test_unpack_bitmask_reads_bit_t_of_word_t_over_32() -> None:
    mask = torch.zeros((2, bitmask_words(70)), dtype=torch.int32)
    AllowedSet({0, 31, 33, 69}, 1).fill_bitmask(mask[0])
    AllowedSet({5}, 1).fill_bitmask(mask[1])
    allowed = unpack_bitmask(mask, 70)
    assert allowed.shape == (2, 70)
    assert allowed[0].nonzero().view(-1).tolist() == [0, 31, 33, 69]
    assert allowed[1].nonzero().view(-1).tolist() == [5]


def test_apply_constraints_masks_only_the_constrained_rows() -> None:
    logits = torch.zeros((3, 40))
    apply_constraints(logits, [0, 2], [AllowedSet({3, 4}, 1), AllowedSet({39}, 1)])
    assert torch.isfinite(logits[0]).nonzero().view(-1).tolist() == [3, 4]
    assert torch.isfinite(logits[1]).all()
    assert torch.isfinite(logits[2]).nonzero().view(-1).tolist() == [39]


def test_suppression_yields_to_the_grammar_and_an_empty_mask_falls_back_to_stop() -> None:
    logits = torch.zeros((3, 10))
    apply_constraints(
        logits,
        [0, 1, 2],
        [AllowedSet({2, 7}, 1), AllowedSet({2}, 1), AllowedSet(set(), 1)],
        suppress=[{2}, {2}, set()],
        fallback=[{2}, {2}, {2}],
    )
    assert torch.isfinite(logits[0]).nonzero().view(-1).tolist() == [7]  # EOS suppressed
    assert torch.isfinite(logits[1]).nonzero().view(-1).tolist() == [2]  # only EOS: kept
    assert torch.isfinite(logits[2]).nonzero().view(-1).tolist() == [2]  # nothing: EOS


def test_constrained_and_free_requests_share_a_batch(tiny_model: Transformer) -> None:
    prompts = random_prompts(4, 5, 30, seed=3)
    free = SamplingParams(temperature=0.0, max_tokens=10)
    sampled = SamplingParams(temperature=0.9, seed=5, max_tokens=50)
    constraints = [AllowedSet({10, 20, 30}, 6), AllowedSet({7}, 3)]
    requests = [
        EngineRequest("free0", prompts[0], free),
        EngineRequest("c0", prompts[1], sampled, constraint=constraints[0]),
        EngineRequest("free1", prompts[2], free),
        EngineRequest("c1", prompts[3], free, constraint=constraints[1]),
    ]
    outs = run(make_engine(tiny_model), requests)
    for name, prompt in (("free0", prompts[0]), ("free1", prompts[2])):
        assert tokens_of(outs[name]) == reference_greedy(tiny_model, prompt, 10)
    assert set(tokens_of(outs["c0"])) <= {10, 20, 30} and len(tokens_of(outs["c0"])) == 6
    assert tokens_of(outs["c1"]) == [7, 7, 7]
    for name, c in (("c0", constraints[0]), ("c1", constraints[1])):
        assert outs[name][-1].finish_reason == "stop"  # complete: stop, not length
        assert c.consumed == tokens_of(outs[name])


def test_max_tokens_cuts_an_incomplete_constraint_with_length(tiny_model: Transformer) -> None:
    c = AllowedSet({11, 12}, 100)
    params = SamplingParams(temperature=0.0, max_tokens=4)
    outs = run(make_engine(tiny_model), [EngineRequest("a", [1, 2, 3], params, constraint=c)])
    assert outs["a"][-1].finish_reason == "length" and len(c.consumed) == 4


def test_preemption_keeps_the_constraint_in_step_with_the_output(
    tiny_model: Transformer,
) -> None:
    prompts = random_prompts(6, 20, 40, seed=7)
    allowed = set(range(0, 256, 3))
    constraints = [AllowedSet(allowed, 30) for _ in prompts]
    params = SamplingParams(temperature=0.0, max_tokens=40)
    engine = make_engine(tiny_model, kv_tokens=96, block_size=8, enable_prefix_caching=False)
    outs = run(
        engine,
        [
            EngineRequest(f"r{i}", p, params, constraint=c)
            for i, (p, c) in enumerate(zip(prompts, constraints, strict=True))
        ],
    )
    assert engine.stats().num_preemptions_total > 0
    for i, c in enumerate(constraints):
        tokens = tokens_of(outs[f"r{i}"])
        assert c.consumed == tokens and len(tokens) == 30  # one advance per output token
        assert outs[f"r{i}"][-1].finish_reason == "stop"
    # Alone (no preemption) the same constrained greedy tokens come out.
    alone = AllowedSet(allowed, 30)
    solo = run(make_engine(tiny_model), [EngineRequest("x", prompts[0], params, constraint=alone)])
    assert tokens_of(solo["x"]) == tokens_of(outs["r0"])
