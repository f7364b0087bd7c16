"""The real SmolLM2-135M-Instruct GGUF: our loader + model against transformers.

transformers dequantizes the GGUF with gguf-py and un-permutes q/k to its own layout;
we dequantize ourselves and keep llama.cpp's interleaved layout. Logits must agree to
1e-4 and greedy decoding with our KV cache must pick the same tokens.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from levant.models.loaders import load_checkpoint
from levant.models.transformer import KVCache, Transformer, build_model

# The chat template applied to [user: "Write a short story about a robot who learns to
# paint the stars."] with the generation prompt (44 tokens).
# fmt: off
PROMPT = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
    411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 19161, 253, 1890, 1977, 563, 253, 8085,
    617, 17542, 288, 7670, 260, 5703, 30, 2, 198, 1, 520, 9531, 198,
]
# fmt: on
NEW_TOKENS = 32


def transformers_from_gguf(path: Path) -> LlamaForCausalLM:
    """transformers' own GGUF loading (dequantization and name mapping included)."""
    if importlib.util.find_spec("accelerate") is not None:
        return LlamaForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        ).eval()
    # from_pretrained(gguf_file=...) insists on accelerate; the same loader, called directly.
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = LlamaConfig.from_pretrained(path.parent, gguf_file=path.name)
    model = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to embed_tokens
    return model.eval()


@pytest.fixture(scope="module")
def ours(smollm2_gguf: Path) -> Transformer:
    config, weights = load_checkpoint(smollm2_gguf)
    return build_model(config, weights)


@pytest.fixture(scope="module")
def reference(smollm2_gguf: Path) -> LlamaForCausalLM:
    return transformers_from_gguf(smollm2_gguf)


def test_config_from_gguf_metadata(ours: Transformer) -> None:
    c = ours.config
    assert (c.vocab_size, c.dim, c.n_layers, c.hidden_dim) == (49152, 576, 30, 1536)
    assert (c.n_heads, c.n_kv_heads, c.head_dim) == (9, 3, 64)
    assert c.rope_theta == 100000.0 and c.max_position == 8192
    assert c.tie_embeddings and c.sliding_window is None and c.rope_scaling is None


@pytest.mark.slow
def test_logits_match_transformers(ours: Transformer, reference: LlamaForCausalLM) -> None:
    tokens = torch.tensor([PROMPT])
    with torch.no_grad():
        expected = reference(tokens).logits
        torch.testing.assert_close(ours(tokens, 0), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_greedy_decode_matches_transformers_generate(
    ours: Transformer, reference: LlamaForCausalLM
) -> None:
    tokens = torch.tensor([PROMPT])
    cache = KVCache.allocate(ours.config, 1, len(PROMPT) + NEW_TOKENS, torch.float32, tokens.device)
    with torch.no_grad():
        expected = reference.generate(tokens, max_new_tokens=NEW_TOKENS, do_sample=False)
        expected_new = expected[0, len(PROMPT) :].tolist()

        generated: list[int] = []
        logits = ours(tokens, 0, cache)
        for pos in range(len(PROMPT), len(PROMPT) + NEW_TOKENS):
            generated.append(int(logits[0, -1].argmax()))
            logits = ours(torch.tensor([generated[-1:]]), pos, cache)
    # transformers stops early at EOS; up to that point the tokens are identical.
    assert generated[: len(expected_new)] == expected_new
    assert len(expected_new) == NEW_TOKENS or expected_new[-1] == 2
