"""The real SmolLM2-135M through the engine: batched == alone, prefix hits change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from levant.engine.core import LLMEngine
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models.loaders import load_checkpoint
from levant.models.transformer import KVCache, Transformer, build_model
from tests.engine.test_engine import run, tokens_of
from tests.models.conftest import smollm2_gguf  # noqa: F401 (fixture)

# SmolLM2's chat template around "Write a short story about a robot who learns to paint
# the stars." (44 tokens).
# fmt: off
PROMPT = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
    411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 19161, 253, 1890, 1977, 563, 253, 8085,
    617, 17542, 288, 7670, 260, 5703, 30, 2, 198, 1, 520, 9531, 198,
]
# fmt: on
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> Transformer:  # noqa: F811
    config, weights = load_checkpoint(smollm2_gguf)
    return build_model(config, weights)


def engine(model: Transformer) -> LLMEngine:
    return LLMEngine(model, model.config, model_id="smollm2", kv_cache_bytes=256 << 20)


def reference(model: Transformer, prompt: list[int]) -> list[int]:
    cache = KVCache.allocate(
        model.config, 1, len(prompt) + NEW_TOKENS, torch.float32, torch.device("cpu")
    )
    out: list[int] = []
    with torch.inference_mode():
        logits = model(torch.tensor([prompt]), 0, cache)[0, -1]
        for pos in range(len(prompt), len(prompt) + NEW_TOKENS):
            out.append(int(logits.argmax()))
            logits = model(torch.tensor([out[-1:]]), pos, cache)[0, -1]
    return out


@pytest.mark.slow
def test_sixteen_streams_match_alone_and_prefix_hits(smollm2: Transformer) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    # Sixteen prompts sharing the system prompt block, each with its own question tail.
    prompts = [[*PROMPT[:-4], 28 + i, 30 + i, *PROMPT[-4:]] for i in range(16)]
    eng = engine(smollm2)
    alone = tokens_of(run(eng, [EngineRequest("alone", prompts[5], params)])["alone"])
    assert alone == reference(smollm2, prompts[5])
    batch = run(eng, [EngineRequest(f"r{i}", p, params) for i, p in enumerate(prompts)])
    assert tokens_of(batch["r5"]) == alone
    # Every prompt shares the first two 16-token blocks with the one run alone.
    assert all(b[-1].num_cached_tokens == 32 for b in batch.values())
    assert tokens_of(batch["r11"]) == reference(smollm2, prompts[11])
