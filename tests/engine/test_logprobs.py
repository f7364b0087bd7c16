"""Log-probabilities from the batched sampler: against transformers' log-softmax, and
unchanged by penalties, temperature or masks (the raw distribution, as vLLM returns)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from levant.engine.core import LLMEngine
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.engine.sampler import sample_batch, token_logprobs
from levant.models.loaders import load_checkpoint
from tests.models.conftest import smollm2_gguf  # noqa: F401 (fixture)
from tests.models.test_smollm2 import PROMPT, transformers_from_gguf

NEW_TOKENS = 8


class _Req:
    """The fields of an engine Request that ``sample_batch`` reads."""

    def __init__(self, params: SamplingParams) -> None:
        self.sampling = params
        self.output_token_ids: list[int] = [1, 1, 2]
        self.num_output_tokens = 3
        self.constraint = None
        self.generator = torch.Generator().manual_seed(0)
        self.sampled_logprob = None


def test_token_logprobs_are_log_softmax_sorted() -> None:
    raw = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 0.0]])
    out = token_logprobs(raw, [2, 0], [3, 0])
    ref = torch.log_softmax(raw, dim=-1)
    assert out[0].token_id == 2 and out[0].logprob == pytest.approx(float(ref[0, 2]))
    assert [t for t, _ in out[0].top] == [1, 2, 0]
    assert [v for _, v in out[0].top] == sorted((v for _, v in out[0].top), reverse=True)
    assert out[1].top == ()


def test_sample_batch_logprobs_only_for_requests_that_ask_and_from_raw_logits() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [0.0, 2.0, 1.0, -1.0]])
    raw = logits.clone()
    asks = _Req(SamplingParams(temperature=0.0, logprobs=2, frequency_penalty=2.0))
    silent = _Req(SamplingParams(temperature=0.0))
    tokens = sample_batch(logits, [asks, silent])  # type: ignore[list-item]
    assert silent.sampled_logprob is None
    lp = asks.sampled_logprob
    assert lp is not None and lp.token_id == tokens[0]
    # The penalty moved the sampled token off token 1; the logprob is the raw model's.
    assert lp.logprob == pytest.approx(float(torch.log_softmax(raw[0], -1)[tokens[0]]))
    assert lp.top[0][0] == 1


@pytest.mark.slow
def test_greedy_logprobs_match_transformers(smollm2_gguf: Path) -> None:  # noqa: F811
    from levant.models.transformer import build_model

    config, weights = load_checkpoint(smollm2_gguf)
    model = build_model(config, weights)
    engine = LLMEngine(model, config, model_id="smollm2", kv_cache_bytes=64 << 20)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=5)
    outputs = list(engine.generate(EngineRequest("lp", PROMPT, params)))
    tokens = [t for o in outputs for t in o.new_token_ids]
    logprobs = [lp for o in outputs for lp in o.logprobs or []]
    assert len(logprobs) == len(tokens) == NEW_TOKENS

    reference = transformers_from_gguf(smollm2_gguf)
    with torch.no_grad():
        logits = reference(torch.tensor([PROMPT + tokens])).logits[0]
    expected = torch.log_softmax(logits[len(PROMPT) - 1 : -1].float(), dim=-1)
    for i, (token, lp) in enumerate(zip(tokens, logprobs, strict=True)):
        assert lp.token_id == token
        assert lp.logprob == pytest.approx(float(expected[i, token]), abs=1e-3)
        assert lp.top[0][0] == token  # greedy: the chosen token is the most likely
        top_ref = torch.topk(expected[i], 5)
        assert [t for t, _ in lp.top] == top_ref.indices.tolist()
        assert [v for _, v in lp.top] == pytest.approx(top_ref.values.tolist(), abs=1e-3)
