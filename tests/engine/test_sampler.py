"""Sampler: greedy, seeds, top-k/top-p masses, penalties."""

import torch

from levant.engine.protocol import EngineRequest, SamplingParams
from levant.engine.request import Request
from levant.engine.sampler import (
    apply_penalties,
    logits_to_probs,
    make_generator,
    sample,
    sample_batch,
)


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


def make_request(rid: str, params: SamplingParams) -> Request:
    return Request(
        EngineRequest(rid, [1, 2], params),
        max_new_tokens=50,
        at_model_limit=False,
        extra_keys=b"",
        arrival_time=0.0,
        device=torch.device("cpu"),
    )


def test_min_tokens_holds_back_only_the_rows_still_short_of_it() -> None:
    """A batch where rows differ in stop tokens and progress: each row's stop tokens are
    barred while it is under its min_tokens, and no other row's or token's logits move."""

    def request(rid: str, stops: set[int], min_tokens: int, produced: int) -> Request:
        params = SamplingParams(
            temperature=0.0, max_tokens=50, stop_token_ids=frozenset(stops), min_tokens=min_tokens
        )
        r = make_request(rid, params)
        r.output_token_ids = [7] * produced
        return r

    logits = torch.zeros(4, 10)
    logits[:, 3] = 5.0  # the favourite of every row
    logits[:, 4] = 4.0
    logits[:, 5] = 3.0
    requests = [
        request("short", {3}, min_tokens=2, produced=0),  # 3 barred: 4 next
        request("done", {3}, min_tokens=2, produced=2),  # may stop now: 3
        request("two stops", {3, 4}, min_tokens=5, produced=1),  # 3 and 4 barred: 5
        request("no min", {3}, min_tokens=0, produced=0),  # 3
    ]
    assert sample_batch(logits, requests) == [4, 3, 5, 3]


def test_draws_follow_the_written_out_distribution() -> None:
    """Plain, top-k and top-p draws (the batched inverse-CDF draw) against the probabilities
    ``logits_to_probs`` writes out: 6,000 seeded draws each land within 0.025 of them, and
    never on a token they zero."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.2, -0.5, -3.0])
    for params in (
        SamplingParams(temperature=1.3, seed=1),
        SamplingParams(temperature=0.8, top_k=3, seed=2),
        SamplingParams(temperature=1.0, top_p=0.75, seed=3),
    ):
        gen = make_generator(params.seed, torch.device("cpu"))
        expected = logits_to_probs(logits, params)
        counts = torch.zeros(6)
        for _ in range(6000):
            counts[sample(logits, params, gen)] += 1
        freq = counts / counts.sum()
        assert (freq[expected == 0] == 0).all(), params
        assert (freq - expected).abs().max() < 0.025, (params, freq, expected)


def test_a_row_draws_the_same_token_alone_or_in_any_batch() -> None:
    """Mixed rows (greedy, seeded plain, top-k and top-p, unseeded) in one batch: each seeded
    row's token equals the one it draws alone from a fresh generator of its seed."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(5, 300, generator=g) * 2
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.9, seed=11),
        SamplingParams(temperature=0.7, top_k=20, seed=12),
        SamplingParams(temperature=1.0, top_p=0.8, seed=13),
        SamplingParams(temperature=1.0),  # unseeded: only checked to be a valid token
    ]
    for _ in range(5):
        requests = [make_request(f"r{i}", p) for i, p in enumerate(params)]
        batch = sample_batch(logits.clone(), requests)
        for i, p in enumerate(params):
            if p.temperature > 0 and p.seed is None:
                assert 0 <= batch[i] < 300
                continue
            gen = make_generator(p.seed, torch.device("cpu"))
            assert batch[i] == sample(logits[i].clone(), p, gen), p
        logits = logits.roll(1, dims=0)  # each row in another position next time
        params = params[-1:] + params[:-1]


def test_a_top_p_nucleus_wider_than_the_candidates_is_drawn_whole() -> None:
    """A nearly flat distribution over 2,000 tokens at top_p 0.5: the nucleus (about 1,000
    tokens) reaches past the 256 likeliest, so the row sorts its whole vocabulary; draws
    spread over more than 256 tokens and stay inside the nucleus."""
    logits = -torch.arange(2000, dtype=torch.float32) * 1e-4  # strictly decreasing
    params = SamplingParams(temperature=1.0, top_p=0.5, seed=5)
    inside = int((logits_to_probs(logits, params) > 0).sum())
    assert inside > 900
    gen = make_generator(5, torch.device("cpu"))
    drawn = [sample(logits, params, gen) for _ in range(3000)]
    assert max(drawn) < inside
    assert len(set(drawn)) > 256
