"""Sampler: greedy, seeds, top-k/top-p masses, penalties."""

import torch

from levant.engine.protocol import SamplingParams
from levant.engine.sampler import apply_penalties, logits_to_probs, make_generator, sample


def test_greedy_is_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, SamplingParams(temperature=0.0), None) == 1


def test_same_seed_same_tokens() -> None:
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, seed=42)

    def draw() -> list[int]:
        gen = make_generator(42, torch.device("cpu"))
        return [sample(logits, params, gen) for _ in range(20)]

    first, second = draw(), draw()
    assert first == second
    assert len(set(first)) > 1  # it really samples


def test_top_k_keeps_only_k_tokens() -> None:
    logits = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    probs = logits_to_probs(logits, SamplingParams(temperature=1.0, top_k=2))
    assert (probs[2:] == 0).all() and torch.isclose(probs.sum(), torch.tensor(1.0))


def test_top_p_keeps_smallest_set_reaching_mass() -> None:
    probs_in = torch.tensor([0.5, 0.3, 0.15, 0.05])
    probs = logits_to_probs(probs_in.log(), SamplingParams(temperature=1.0, top_p=0.8))
    assert probs[2] == 0 and probs[3] == 0
    assert torch.allclose(probs[:2], torch.tensor([0.625, 0.375]))


def test_top_p_always_keeps_the_top_token() -> None:
    probs = logits_to_probs(torch.tensor([2.0, 1.0]), SamplingParams(top_p=0.0))
    assert probs.tolist() == [1.0, 0.0]


def test_penalties_follow_openai_formula() -> None:
    logits = torch.zeros(4)
    counts = torch.tensor([0.0, 1.0, 3.0, 0.0])
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, counts, params)
    assert out.tolist() == [0.0, -0.75, -1.25, 0.0]
