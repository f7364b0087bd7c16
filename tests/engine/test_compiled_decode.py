"""The compiled decode step: the same greedy tokens as the eager step, and it is the path
actually taken (every step where all sequences decode, one sequence or several); steps
with a prefill chunk stay eager.

The reference is the eager engine on the same weights (itself checked against the
contiguous-cache model and transformers elsewhere). Compiling needs Inductor and a C++
compiler and takes tens of seconds, so the test is slow.
"""

from __future__ import annotations

import pytest
import torch

from levant.engine.compiled_decode import CompiledDecode
from levant.engine.core import LLMEngine
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models.config import ModelConfig
from levant.models.paged_attention import DecodeAttention
from tests.engine.conftest import TINY, random_model, random_prompts
from tests.engine.test_engine import run, tokens_of

pytestmark = pytest.mark.slow


class Counting(CompiledDecode):
    calls = 0

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: DecodeAttention
    ) -> torch.Tensor:
        type(self).calls += 1
        return super().__call__(tokens, positions, attend)


@pytest.mark.parametrize("window", [None, 8])
def test_compiled_step_gives_the_eager_tokens(
    window: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = random_model(ModelConfig(**{**TINY.__dict__, "sliding_window": window}))
    monkeypatch.setattr("levant.engine.core.CompiledDecode", Counting)
    compiled = LLMEngine(model, model.config, compile_decode=True)
    eager = LLMEngine(model, model.config)
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    for i, prompt in enumerate(random_prompts(3, 5, 40, seed=3)):
        Counting.calls = 0
        request = EngineRequest(f"r{i}", prompt, params)
        got = tokens_of(run(compiled, [request])[f"r{i}"])
        assert got == tokens_of(run(eager, [request])[f"r{i}"])
        assert len(got) == 20
        assert Counting.calls == 19  # every step after the prefill (which samples token 1)
    # Several sequences at once: the decode steps run compiled and still agree.
    Counting.calls = 0
    many = [EngineRequest(f"m{i}", p, params) for i, p in enumerate(random_prompts(4, 5, 40))]
    outs_c, outs_e = run(compiled, many), run(eager, many)
    assert {k: tokens_of(v) for k, v in outs_c.items()} == {
        k: tokens_of(v) for k, v in outs_e.items()
    }
    assert Counting.calls >= 19  # the batched decode steps, not only a single-sequence tail


def test_the_compiled_step_refuses_more_rows_than_it_was_built_for() -> None:
    model = random_model()
    step = CompiledDecode(model, max_rows=4)
    with pytest.raises(ValueError, match="1 to 4 sequences"):
        step(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), None)  # type: ignore[arg-type]
    assert step.warm_up_rows() == [1, 2]  # a float32 model: no kernel switches


def test_two_models_in_one_process_each_run_their_own_graphs() -> None:
    """The compiled step skips the guards on a model's weights (they cost a tenth of a
    small model's step): each model compiles its own copy of the forward, so a second
    model of another width never runs the first one's graphs."""
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    [prompt] = random_prompts(1, 5, 40, seed=4)
    wide = ModelConfig(**{**TINY.__dict__, "dim": TINY.dim * 2, "hidden_dim": TINY.hidden_dim * 2})
    for i, config in enumerate([TINY, wide]):
        model = random_model(config)
        compiled = LLMEngine(model, model.config, compile_decode=True)
        eager = LLMEngine(model, model.config)
        request = EngineRequest(f"w{i}", prompt, params)
        got = tokens_of(run(compiled, [request])[f"w{i}"])
        assert got == tokens_of(run(eager, [request])[f"w{i}"]) and len(got) == 12
