"""Invariants of our transformer: masks, and KV-cache decoding equals full re-scoring."""

from __future__ import annotations

import pytest
import torch

from levant.models.config import ModelConfig
from levant.models.transformer import KVCache, Transformer, attention_mask, build_model

CONFIG = ModelConfig(
    vocab_size=512,
    dim=64,
    n_layers=3,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=128,
    head_dim=16,
    rope_theta=10000.0,
    max_position=64,
    sliding_window=8,
)


def random_model(config: ModelConfig) -> Transformer:
    torch.manual_seed(0)
    weights = Transformer(config).state_dict()
    # Sharpen attention so that which positions are visible visibly matters.
    weights = {k: v * 3 if ".wq." in k or ".wk." in k else v for k, v in weights.items()}
    return build_model(config, weights)


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CONFIG.vocab_size, (batch, length), generator=g)


def test_attention_mask_window_counts_itself() -> None:
    mask = attention_mask(start_pos=0, seq_len=20, sliding_window=8, device=torch.device("cpu"))
    assert mask is not None
    for q in range(20):
        visible = mask[q].nonzero().flatten().tolist()
        assert visible == list(range(max(0, q - 7), q + 1))  # at most 8, itself included


def test_attention_mask_offset_rows_are_absolute_positions() -> None:
    mask = attention_mask(start_pos=10, seq_len=3, sliding_window=None, device=torch.device("cpu"))
    assert mask is not None and mask.shape == (3, 13)
    assert mask.sum(dim=1).tolist() == [11, 12, 13]
    assert attention_mask(0, 5, None, torch.device("cpu")) is None  # plain causal prefill
    assert attention_mask(12, 1, None, torch.device("cpu")) is None  # decode sees everything


@pytest.mark.parametrize("window", [None, 8])
def test_incremental_decode_matches_full_rescoring(window: int | None) -> None:
    config = ModelConfig(**{**CONFIG.__dict__, "sliding_window": window})
    model = random_model(config)
    seq = tokens(2, 24)
    with torch.no_grad():
        full = model(seq, 0).log_softmax(-1)  # (2, 24, vocab)
        cache = KVCache.allocate(config, 2, 32, torch.float32, torch.device("cpu"))
        steps = [model(seq[:, :5], 0, cache)]  # prefill
        steps += [model(seq[:, p : p + 1], p, cache) for p in range(5, 24)]  # one token at a time
    incremental = torch.cat(steps, dim=1).log_softmax(-1)
    torch.testing.assert_close(incremental, full, atol=1e-4, rtol=0)


def test_chunked_prefill_past_the_window_matches_full_rescoring() -> None:
    model = random_model(CONFIG)
    seq = tokens(1, 24)
    with torch.no_grad():
        full = model(seq, 0)
        cache = KVCache.allocate(CONFIG, 1, 24, torch.float32, torch.device("cpu"))
        chunks = [model(seq[:, p : p + 7], p, cache) for p in range(0, 24, 7)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-4, rtol=0)


def test_window_changes_logits_only_past_the_window() -> None:
    windowed = random_model(CONFIG)
    unbounded = random_model(ModelConfig(**{**CONFIG.__dict__, "sliding_window": None}))
    seq = tokens(1, 20)
    with torch.no_grad():
        a, b = windowed(seq, 0), unbounded(seq, 0)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert (a[:, 8:] - b[:, 8:]).abs().amax() > 1e-2


def test_batch_rows_are_independent() -> None:
    model = random_model(CONFIG)
    seq = tokens(3, 12)
    with torch.no_grad():
        batched = model(seq, 0)
        single = torch.cat([model(seq[i : i + 1], 0) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_tied_embeddings_have_no_output_parameter() -> None:
    config = ModelConfig(**{**CONFIG.__dict__, "tie_embeddings": True})
    model = random_model(config)
    assert "output.weight" not in model.state_dict()
    with torch.no_grad():
        before = model(tokens(1, 4), 0)
        model.tok_embeddings.weight[:, 0] += 1.0  # the output head reads the same matrix
        after = model(tokens(1, 4), 0)
    assert not torch.allclose(before, after)


def test_build_model_is_strict_eval_and_typed() -> None:
    weights = Transformer(CONFIG).state_dict()
    model = build_model(CONFIG, weights, dtype=torch.bfloat16)
    assert not model.training
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in model.parameters())
    assert model.inv_freq.dtype == torch.float32
    logits = model(tokens(1, 4), 0)
    assert logits.dtype == torch.float32
    reference = build_model(CONFIG, weights)(tokens(1, 4), 0)
    torch.testing.assert_close(logits, reference, atol=0.05, rtol=0.05)  # bf16 rounding only
    del weights["norm.weight"]
    with pytest.raises(RuntimeError, match=r"norm\.weight"):
        build_model(CONFIG, weights)


def test_start_pos_without_cache_is_rejected() -> None:
    with pytest.raises(ValueError, match="start_pos"):
        random_model(CONFIG)(tokens(1, 2), 3)
